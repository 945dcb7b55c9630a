from devtools.stripe_emulator.forms import decode


def test_brackets_become_nested_dicts_and_lists() -> None:
    decoded = decode(
        [
            ("amount", "100"),
            ("metadata[org]", "o1"),
            ("metadata[0]", "kept as a key"),
            ("payment_method_types[]", "card"),
            ("payment_method_types[]", "sepa_debit"),
            ("expand[0]", "latest_charge"),
            ("invoice_settings[default_payment_method]", "pm_1"),
            ("created[gte]", "5"),
            ("items[1][price]", "b"),
            ("items[0][price]", "a"),
        ]
    )
    assert decoded == {
        "amount": "100",
        "metadata": {"org": "o1", "0": "kept as a key"},
        "payment_method_types": ["card", "sepa_debit"],
        "expand": ["latest_charge"],
        "invoice_settings": {"default_payment_method": "pm_1"},
        "created": {"gte": "5"},
        "items": [{"price": "a"}, {"price": "b"}],
    }
