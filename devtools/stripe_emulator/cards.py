"""Stripe's test payment-method tokens and how each behaves when charged."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Behaviour(enum.Enum):
    SUCCEED = "succeed"
    DECLINE = "decline"
    AUTHENTICATE = "authenticate"


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    behaviour: Behaviour
    funding: str = "credit"
    country: str = "US"


TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242", Behaviour.SUCCEED),
    "pm_card_mastercard": TestCard("mastercard", "4444", Behaviour.SUCCEED),
    "pm_card_chargeDeclined": TestCard("visa", "0002", Behaviour.DECLINE),
    # Stripe's "attaches fine, every charge fails" card; here the same as chargeDeclined.
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", Behaviour.DECLINE),
    "pm_card_authenticationRequired": TestCard("visa", "3184", Behaviour.AUTHENTICATE),
}
