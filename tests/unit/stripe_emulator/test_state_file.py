"""The emulator's account kept in a state file: a restart forgets nothing payments relies on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import stripe

from devtools.stripe_emulator import StripeEmulator
from devtools.stripe_emulator.persistence import StateFile, StateFileError
from devtools.stripe_emulator.state import Account
from services.kit.devstack.errors import DevStackError
from services.kit.devstack.ports import free_port
from services.kit.devstack.stripe import StripeEmulatorProcess
from services.kit.devstack.suite import Suite
from tests.unit.stripe_emulator.conftest import client_for, customer_with_card, receiving

ATTEMPT_KEY = "tally:invoice:inv_1:attempt:1"


def _attempt(customer: str, payment_method: str, amount: int = 1999) -> Any:
    return {
        "amount": amount,
        "currency": "usd",
        "customer": customer,
        "payment_method": payment_method,
        "confirm": True,
        "off_session": True,
    }


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


async def test_customers_cards_events_and_idempotency_keys_survive_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "stripe" / "state.json"
    async with StripeEmulator(state_file=state) as first:
        client = client_for(first)
        customer, visa = await customer_with_card(client, "pm_card_visa")
        declined = (
            await client.v1.payment_methods.attach_async(
                "pm_card_chargeDeclined", params={"customer": customer}
            )
        ).id
        await client.v1.customers.update_async(
            customer, params={"invoice_settings": {"default_payment_method": visa}}
        )
        paid = await client.v1.payment_intents.create_async(
            params=_attempt(customer, visa), options={"idempotency_key": ATTEMPT_KEY}
        )
        assert paid.status == "succeeded"
        events_before = [e["id"] for e in first.events]
    # The file was replaced, never left half-written beside a temporary one.
    assert _siblings(state) == ["state.json"]

    async with StripeEmulator(state_file=state) as second:
        client = client_for(second)
        kept = await client.v1.customers.retrieve_async(customer)
        assert (kept.email, kept.invoice_settings.default_payment_method) == ("a@example.com", visa)
        listed = await client.v1.payment_methods.list_async(params={"customer": customer})
        assert [pm.id for pm in listed.data] == [declined, visa]  # newest first, as before

        again = await client.v1.payment_intents.create_async(
            params=_attempt(customer, visa), options={"idempotency_key": ATTEMPT_KEY}
        )
        assert again.last_response.headers["Idempotent-Replayed"] == "true"
        assert again.last_response.body == paid.last_response.body
        with pytest.raises(stripe.IdempotencyError):
            await client.v1.payment_intents.create_async(
                params=_attempt(customer, visa, amount=2000),
                options={"idempotency_key": ATTEMPT_KEY},
            )

        charged = await client.v1.payment_intents.create_async(
            params=_attempt(customer, visa, amount=500)
        )
        assert (charged.status, charged.amount_received) == ("succeeded", 500)
        with pytest.raises(stripe.CardError) as refused:
            await client.v1.payment_intents.create_async(params=_attempt(customer, declined))
        assert refused.value.error is not None
        assert refused.value.error.decline_code == "generic_decline"

        ids = [e["id"] for e in second.events]
        assert ids[: len(events_before)] == events_before
        assert [e["type"] for e in second.events][len(events_before) :] == [
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
            "payment_intent.created",
            "charge.failed",
            "payment_intent.payment_failed",
        ]


async def test_only_a_request_that_changed_the_account_rewrites_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    async with StripeEmulator(state_file=state) as emu:
        client = client_for(emu)
        created = await client.v1.customers.create_async(
            params={"email": "a@example.com"}, options={"idempotency_key": "c-1"}
        )
        # A write makes a new file while the old one still exists, so a request
        # that wrote would leave another inode behind it (checked after each one).
        written = state.stat().st_ino
        await client.v1.customers.retrieve_async(created.id)
        assert state.stat().st_ino == written
        await client.v1.customers.create_async(
            params={"email": "a@example.com"}, options={"idempotency_key": "c-1"}
        )
        assert state.stat().st_ino == written
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.customers.update_async("cus_missing", params={"name": "x"})
        assert state.stat().st_ino == written
        before = state.read_bytes()
        await client.v1.customers.update_async(created.id, params={"name": "Acme"})
        assert state.read_bytes() != before
        assert b'"name": "Acme"' in state.read_bytes()


async def test_a_settlement_after_a_processing_delay_is_saved_too(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    async with StripeEmulator(state_file=state) as emu, receiving(emu) as receiver:
        emu.processing_delay = 0.01
        client = client_for(emu)
        customer, visa = await customer_with_card(client, "pm_card_visa")
        pi = await client.v1.payment_intents.create_async(params=_attempt(customer, visa))
        assert pi.status == "processing"
        # Saved before its webhook can be sent, so its arrival means it is on disk.
        await receiver.wait_for("payment_intent.succeeded")
    async with StripeEmulator(state_file=state) as emu:
        settled = await client_for(emu).v1.payment_intents.retrieve_async(pi.id)
        assert settled.status == "succeeded"


async def _saved_file(tmp_path: Path) -> Path:
    state = tmp_path / "state.json"
    async with StripeEmulator(state_file=state) as emu:
        await customer_with_card(client_for(emu), "pm_card_visa")
    return state


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="torn"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"\x00\xffnot json", id="garbage"),
        pytest.param(lambda data: b"[]", id="json-but-no-account"),
        pytest.param(
            lambda data: data.replace(b'"behaviour": "succeed"', b'"behaviour": "maybe"'),
            id="unknown-card-behaviour",
        ),
    ],
)
async def test_an_unreadable_state_file_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, spoil: Any
) -> None:
    state = await _saved_file(tmp_path)
    spoiled = spoil(state.read_bytes())
    state.write_bytes(spoiled)
    emu = StripeEmulator(state_file=state)
    with pytest.raises(StateFileError) as caught:
        await emu.start()
    message = str(caught.value)
    assert f"cannot load the state file {state}: " in message
    assert "\n" not in message
    assert state.read_bytes() == spoiled  # left for the developer to look at
    await emu.stop()


def test_a_failed_write_keeps_the_previous_account_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state.json"
    saver = StateFile(state)
    saver.save(Account({"cus_1": {"id": "cus_1", "object": "customer"}}, [], {}), {})
    before = state.read_bytes()

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        saver.save(Account({}, [], {}), {})
    assert state.read_bytes() == before
    assert _siblings(state) == ["state.json"]
    saved = StateFile(state).load()
    assert saved is not None and list(saved.account.objects) == ["cus_1"]


def _process(tmp_path: Path) -> StripeEmulatorProcess:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return StripeEmulatorProcess(
        free_port(),
        webhook_url="http://127.0.0.1:9/webhooks/stripe",
        log_dir=logs,
        state_file=tmp_path / "stripe" / "state.json",
    )


def test_the_suite_process_keeps_its_account_across_a_restart(tmp_path: Path) -> None:
    first = _process(tmp_path)
    first.start()
    try:
        client = stripe.StripeClient(
            first.api_key, base_addresses={"api": first.api_base}, max_network_retries=0
        )
        customer = client.v1.customers.create(params={"email": "ops@acme.test"})
    finally:
        first.stop()

    second = _process(tmp_path)
    second.start()
    try:
        client = stripe.StripeClient(
            second.api_key, base_addresses={"api": second.api_base}, max_network_retries=0
        )
        assert client.v1.customers.retrieve(customer.id).email == "ops@acme.test"
    finally:
        second.stop()


def test_the_suite_process_reports_a_spoiled_state_file_in_one_line(tmp_path: Path) -> None:
    proc = _process(tmp_path)
    assert proc.state_file is not None
    proc.state_file.parent.mkdir(parents=True)
    proc.state_file.write_text('{"version": 1, "objects": {')
    with pytest.raises(DevStackError) as caught:
        proc.start()
    message = str(caught.value)
    assert f"cannot load the state file {proc.state_file}: Invalid JSON" in message
    assert "Traceback" not in message


def test_the_suite_keeps_the_emulator_account_in_its_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("STRIPE_API_KEY", "PAYMENTS_STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    suite = Suite(tmp_path)
    assert suite.stripe is not None
    assert suite.stripe.state_file == tmp_path.resolve() / "stripe" / "state.json"
