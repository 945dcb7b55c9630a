"""What payments needs of a payment provider, in provider-neutral terms.

Only the provider modules know a provider's SDK; the rest of the service sees
these dataclasses, so a second provider is one new module beside stripe_provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

ChargeStatus = Literal["succeeded", "processing", "requires_action", "failed"]


class ProviderError(Exception):
    """The provider refused or could not be reached; ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class InvalidWebhook(Exception):
    """Bad or missing signature, stale timestamp, or a body that is not an event."""


@dataclass(frozen=True)
class ProviderCustomer:
    customer_id: str


@dataclass(frozen=True)
class ProviderPaymentMethod:
    payment_method_id: str
    type: str  # "card", "sepa_debit", "us_bank_account", ...
    brand: str = ""
    last4: str = ""
    exp_month: int = 0
    exp_year: int = 0
    country: str = ""


@dataclass(frozen=True)
class SetupIntentResult:
    setup_intent_id: str
    client_secret: str


@dataclass(frozen=True)
class ChargeRequest:
    customer_id: str
    payment_method_id: str
    amount_minor: int
    currency: str
    idempotency_key: str
    description: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class ChargeResult:
    status: ChargeStatus
    provider_payment_intent_id: str = ""
    failure_code: str = ""
    failure_message: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundResult:
    provider_refund_id: str
    status: Literal["pending", "succeeded", "failed"]
    amount_minor: int
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderEvent:
    """One provider notification, reduced to what payments applies.

    ``kind`` is the provider-neutral meaning ("payment_intent.succeeded" style
    names are Stripe's; other providers map theirs onto the same kinds).
    """

    event_id: str
    kind: str
    created: datetime
    object_id: str = ""
    payment_intent_id: str = ""
    charge: ChargeResult | None = None
    refunds: tuple[RefundResult, ...] = ()
    dispute_amount_minor: int = 0
    dispute_reason: str = ""
    customer_id: str = ""
    payment_method: ProviderPaymentMethod | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


# The kinds payments applies; everything else is acknowledged and logged.
KIND_PI_SUCCEEDED = "payment_intent.succeeded"
KIND_PI_FAILED = "payment_intent.payment_failed"
KIND_PI_REQUIRES_ACTION = "payment_intent.requires_action"
KIND_CHARGE_REFUNDED = "charge.refunded"
KIND_DISPUTE_CREATED = "charge.dispute.created"
KIND_SETUP_SUCCEEDED = "setup_intent.succeeded"
APPLIED_KINDS = (
    KIND_PI_SUCCEEDED,
    KIND_PI_FAILED,
    KIND_PI_REQUIRES_ACTION,
    KIND_CHARGE_REFUNDED,
    KIND_DISPUTE_CREATED,
    KIND_SETUP_SUCCEEDED,
)


class PaymentProvider(Protocol):
    name: str  # "stripe": stored beside provider ids

    async def create_customer(self, org_id: str, idempotency_key: str) -> ProviderCustomer: ...

    async def create_setup_intent(
        self, customer_id: str, idempotency_key: str | None
    ) -> SetupIntentResult: ...

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, idempotency_key: str | None
    ) -> ProviderPaymentMethod: ...

    async def detach_payment_method(self, payment_method_id: str) -> None: ...

    async def payment_method(self, payment_method_id: str) -> ProviderPaymentMethod: ...

    async def charge(self, request: ChargeRequest) -> ChargeResult: ...

    async def payment_intent(self, payment_intent_id: str) -> ChargeResult: ...

    async def find_charge(self, metadata: Mapping[str, str]) -> ChargeResult | None:
        """The newest charge carrying all of ``metadata``, if the provider made one."""
        ...

    async def refund(
        self,
        payment_intent_id: str,
        amount_minor: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult: ...

    def verify_webhook(self, body: bytes, signature_header: str | None) -> ProviderEvent: ...

    async def events_since(self, since: datetime) -> list[ProviderEvent]: ...

    async def aclose(self) -> None: ...
