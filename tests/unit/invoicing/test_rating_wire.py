"""Protobuf <-> rating engine, and the PreviewCharge RPC method."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.invoicing.v1 import invoicing_pb2

from services.invoicing.grpc_api import InvoicingApi
from services.invoicing.rating import Charge, Tier, rate
from services.invoicing.rating.wire import charge_from_proto, preview_charge, rating_steps
from services.kit.errors import InvalidArgument

D = Decimal


def graduated_proto() -> catalog_pb2.Charge:
    return catalog_pb2.Charge(
        metric_code="api_calls",
        graduated=catalog_pb2.GraduatedProperties(
            tiers=[
                catalog_pb2.Tier(up_to="100", unit_amount="0", flat_amount="10"),
                catalog_pb2.Tier(unit_amount="0.05"),
            ]
        ),
        minimum_amount="20",
    )


def test_charge_from_proto_every_model() -> None:
    assert charge_from_proto(graduated_proto(), "USD") == Charge(
        model="graduated",
        currency="USD",
        tiers=(Tier(up_to=D(100), flat_amount=D(10)), Tier(up_to=None, unit_amount=D("0.05"))),
        minimum_amount=D(20),
    )
    pkg = catalog_pb2.Charge(
        package=catalog_pb2.PackageProperties(package_size=1000, package_amount="5", free_units=10)
    )
    assert charge_from_proto(pkg, "EUR").package_size == 1000
    pct = catalog_pb2.Charge(
        percentage=catalog_pb2.PercentageProperties(
            rate="2.9", fixed_amount="0.30", per_transaction_max_amount="5"
        )
    )
    got = charge_from_proto(pct, "USD")
    assert (got.rate, got.per_transaction_min_amount, got.per_transaction_max_amount) == (
        D("2.9"),
        None,
        D(5),
    )
    gp = catalog_pb2.Charge(
        graduated_percentage=catalog_pb2.GraduatedPercentageProperties(
            tiers=[catalog_pb2.PercentageTier(rate="1", flat_amount="2")]
        )
    )
    assert charge_from_proto(gp, "KWD").tiers == (Tier(up_to=None, rate=D(1), flat_amount=D(2)),)
    std = catalog_pb2.Charge(standard=catalog_pb2.StandardProperties(unit_amount="0.000125"))
    assert rate(charge_from_proto(std, "USD"), quantity=D(10**6)).amount_minor == 12500


def test_charge_from_proto_names_proto_fields() -> None:
    bad = catalog_pb2.Charge(
        volume=catalog_pb2.VolumeProperties(
            tiers=[catalog_pb2.Tier(up_to="5", unit_amount="x"), catalog_pb2.Tier(up_to="3")]
        )
    )
    with pytest.raises(InvalidArgument) as info:
        charge_from_proto(bad, "usd")
    fields = {v.field for v in info.value.violations}
    assert fields == {
        "currency_code",
        "charge.volume.tiers[0].unit_amount",
        "charge.volume.tiers[1].up_to",
        "charge.volume.tiers[1].unit_amount",
    }
    with pytest.raises(InvalidArgument) as info:
        charge_from_proto(catalog_pb2.Charge(), "USD")
    assert [v.field for v in info.value.violations] == ["charge.properties"]


def test_preview_charge_response() -> None:
    reply = preview_charge(
        invoicing_pb2.PreviewChargeRequest(
            charge=graduated_proto(), currency_code="USD", quantity="150"
        )
    )
    assert (reply.amount, reply.amount_minor, reply.currency_code, reply.unrounded_amount) == (
        "20.00",
        2000,
        "USD",
        "20",
    )
    assert [(s.tier, s.quantity, s.amount) for s in reply.details] == [
        (1, "100", "10"),
        (2, "50", "2.5"),
        (0, "", "7.5"),
    ]
    assert reply.details[2].unit_amount == ""


def test_preview_charge_percentage_events() -> None:
    reply = preview_charge(
        invoicing_pb2.PreviewChargeRequest(
            charge=catalog_pb2.Charge(
                percentage=catalog_pb2.PercentageProperties(rate="10", fixed_amount="1")
            ),
            currency_code="JPY",
            event_values=["1000", "25"],
        )
    )
    assert (reply.amount, reply.amount_minor) == ("105", 105)  # 101 + 3.5 -> 104.5 -> 105


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"currency_code": "USD"}, {"charge"}),
        ({"charge": graduated_proto(), "currency_code": "USD"}, {"quantity"}),
        ({"charge": graduated_proto(), "currency_code": "USD", "quantity": "-1"}, {"quantity"}),
        (
            {"charge": graduated_proto(), "currency_code": "USD", "event_values": ["x"]},
            {"event_values[0]"},
        ),
    ],
)
def test_preview_charge_bad_requests(fields: dict[str, Any], expected: set[str]) -> None:
    with pytest.raises(InvalidArgument) as info:
        preview_charge(invoicing_pb2.PreviewChargeRequest(**fields))
    assert expected <= {v.field for v in info.value.violations}


def test_rating_steps_match_details() -> None:
    r = rate(charge_from_proto(graduated_proto(), "USD"), quantity=D(50))
    assert [s.description for s in rating_steps(r)] == [d.description for d in r.details]


async def test_servicer_preview_charge() -> None:
    api = InvoicingApi(ctx=None)  # type: ignore[arg-type]
    reply = await api.PreviewCharge(
        invoicing_pb2.PreviewChargeRequest(
            charge=graduated_proto(), currency_code="USD", quantity="1000"
        ),
        None,  # type: ignore[arg-type]
    )
    assert reply.amount == "55.00"
