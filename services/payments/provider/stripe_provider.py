"""Stripe through its official SDK: the only module that imports ``stripe``.

Every call uses the SDK's async methods on one ``StripeClient`` (httpx
underneath, two network retries that reuse the idempotency key). Errors become
``ChargeResult``s (a decline is an outcome, not an exception) or
``ProviderError``s; webhooks are verified by ``stripe.Webhook.construct_event``
over the raw bytes, trying the current secret and then the previous one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import stripe

from services.payments.provider.base import (
    APPLIED_KINDS,
    KIND_CHARGE_REFUNDED,
    KIND_DISPUTE_CREATED,
    KIND_SETUP_SUCCEEDED,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    InvalidWebhook,
    ProviderCustomer,
    ProviderError,
    ProviderEvent,
    ProviderPaymentMethod,
    RefundResult,
    SetupIntentResult,
)

log = logging.getLogger(__name__)

EVENTS_PAGE = 100
# PaymentIntent statuses -> the neutral outcome. requires_payment_method after
# a confirmation means the charge was declined.
PI_STATUS: dict[str, ChargeStatus] = {
    "succeeded": "succeeded",
    "processing": "processing",
    "requires_action": "requires_action",
    "requires_confirmation": "processing",
    "requires_capture": "processing",
    "requires_payment_method": "failed",
    "canceled": "failed",
}


def _dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = obj.to_dict()
    return result


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def charge_of(pi: Mapping[str, Any]) -> ChargeResult:
    error = pi.get("last_payment_error") or {}
    code = str(error.get("code") or error.get("decline_code") or "")
    status = PI_STATUS.get(str(pi.get("status", "")), "processing")
    if status == "failed" and code == "authentication_required":
        # Off-session 3-D Secure: the customer must act; not a decline.
        status = "requires_action"
    settled = status in ("failed", "requires_action")
    return ChargeResult(
        status=status,
        provider_payment_intent_id=str(pi.get("id", "")),
        failure_code=code if settled else "",
        failure_message=str(error.get("message") or "") if settled else "",
        metadata=_str_map(pi.get("metadata")),
    )


def payment_method_of(pm: Mapping[str, Any]) -> ProviderPaymentMethod:
    card = pm.get("card") or {}
    return ProviderPaymentMethod(
        payment_method_id=str(pm.get("id", "")),
        type=str(pm.get("type") or "card"),
        brand=str(card.get("brand") or ""),
        last4=str(card.get("last4") or ""),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
        country=str(card.get("country") or ""),
    )


def refund_of(r: Mapping[str, Any]) -> RefundResult:
    status = str(r.get("status", "pending"))
    return RefundResult(
        provider_refund_id=str(r.get("id", "")),
        status="succeeded"
        if status == "succeeded"
        else "failed"
        if status in ("failed", "canceled")
        else "pending",
        amount_minor=int(r.get("amount") or 0),
        metadata=_str_map(r.get("metadata")),
    )


def event_of(raw: Mapping[str, Any]) -> ProviderEvent:
    kind = str(raw.get("type", ""))
    obj = (raw.get("data") or {}).get("object") or {}
    created = datetime.fromtimestamp(int(raw.get("created") or 0), UTC)
    base: dict[str, Any] = {
        "event_id": str(raw.get("id", "")),
        "kind": kind,
        "created": created,
        "object_id": str(obj.get("id", "")),
        "metadata": _str_map(obj.get("metadata")),
    }
    if kind.startswith("payment_intent."):
        return ProviderEvent(**base, payment_intent_id=base["object_id"], charge=charge_of(obj))
    if kind == KIND_CHARGE_REFUNDED:
        refunds = tuple(refund_of(r) for r in ((obj.get("refunds") or {}).get("data") or []))
        return ProviderEvent(
            **base, payment_intent_id=str(obj.get("payment_intent") or ""), refunds=refunds
        )
    if kind == KIND_DISPUTE_CREATED:
        return ProviderEvent(
            **base,
            payment_intent_id=str(obj.get("payment_intent") or ""),
            dispute_amount_minor=int(obj.get("amount") or 0),
            dispute_reason=str(obj.get("reason") or ""),
        )
    if kind == KIND_SETUP_SUCCEEDED:
        pm = obj.get("payment_method")
        method = (
            payment_method_of(pm)
            if isinstance(pm, Mapping)
            else ProviderPaymentMethod(payment_method_id=str(pm or ""), type="card")
        )
        return ProviderEvent(
            **base, customer_id=str(obj.get("customer") or ""), payment_method=method
        )
    return ProviderEvent(**base)


def _quoted(text: str) -> str:
    # Stripe's search grammar escapes a quote inside a quoted value with a backslash.
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _provider_error(exc: stripe.StripeError) -> ProviderError:
    retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError)
    return ProviderError(str(exc.user_message or exc), code=exc.code or "", retryable=retryable)


class StripeProvider:
    name = "stripe"

    def __init__(
        self,
        api_key: str,
        webhook_secrets: tuple[str, ...],
        api_base: str | None = None,
        timeout_seconds: float = 20.0,
    ) -> None:
        self.webhook_secrets = webhook_secrets
        base = {"api": api_base} if api_base else None
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self.client = stripe.StripeClient(
            api_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=self._http,
            max_network_retries=2,
        )

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_customer(self, org_id: str, idempotency_key: str) -> ProviderCustomer:
        try:
            customer = await self.client.v1.customers.create_async(
                {"metadata": {"tally_org_id": org_id}, "description": f"Tally org {org_id}"},
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return ProviderCustomer(customer_id=customer.id)

    async def create_setup_intent(
        self, customer_id: str, idempotency_key: str | None
    ) -> SetupIntentResult:
        params: dict[str, Any] = {
            "customer": customer_id,
            "usage": "off_session",
            "payment_method_types": ["card"],
        }
        try:
            intent = await self.client.v1.setup_intents.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return SetupIntentResult(
            setup_intent_id=intent.id, client_secret=intent.client_secret or ""
        )

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, idempotency_key: str | None
    ) -> ProviderPaymentMethod:
        try:
            pm = await self.client.v1.payment_methods.attach_async(
                payment_method_id,
                {"customer": customer_id},
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return payment_method_of(_dict(pm))

    async def detach_payment_method(self, payment_method_id: str) -> None:
        try:
            await self.client.v1.payment_methods.detach_async(payment_method_id)
        except stripe.InvalidRequestError as exc:
            # Already detached (or never attached) is the state we want.
            log.info("stripe: detach %s: %s", payment_method_id, exc)
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc

    async def payment_method(self, payment_method_id: str) -> ProviderPaymentMethod:
        try:
            pm = await self.client.v1.payment_methods.retrieve_async(payment_method_id)
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return payment_method_of(_dict(pm))

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        params: dict[str, Any] = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "customer": request.customer_id,
            "payment_method": request.payment_method_id,
            "confirm": True,
            "off_session": True,
            "description": request.description,
            "metadata": dict(request.metadata),
        }
        try:
            pi = await self.client.v1.payment_intents.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": request.idempotency_key},
            )
        except stripe.CardError as exc:
            return self._card_error(exc, request)
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return charge_of(_dict(pi))

    @staticmethod
    def _card_error(exc: stripe.CardError, request: ChargeRequest) -> ChargeResult:
        body = exc.json_body if isinstance(exc.json_body, dict) else {}
        error = body.get("error") or {}
        pi = error.get("payment_intent") or {}
        code = str(exc.code or error.get("code") or "card_error")
        message = str(exc.user_message or error.get("message") or "")
        pi_id = str(pi.get("id") or "")
        if code == "authentication_required" or pi.get("status") == "requires_action":
            # The bank wants the customer (3-D Secure): not a dunning failure.
            return ChargeResult(
                status="requires_action",
                provider_payment_intent_id=pi_id,
                failure_code=code,
                failure_message=message,
                metadata=dict(request.metadata),
            )
        return ChargeResult(
            status="failed",
            provider_payment_intent_id=pi_id,
            failure_code=code,
            failure_message=message,
            metadata=dict(request.metadata),
        )

    async def payment_intent(self, payment_intent_id: str) -> ChargeResult:
        try:
            pi = await self.client.v1.payment_intents.retrieve_async(payment_intent_id)
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return charge_of(_dict(pi))

    async def find_charge(self, metadata: Mapping[str, str]) -> ChargeResult | None:
        # Search lags writes by up to a minute; it is only asked about
        # attempts a day old, long after any write it must see.
        query = " AND ".join(
            f"metadata['{_quoted(k)}']:'{_quoted(v)}'" for k, v in sorted(metadata.items())
        )
        try:
            found = await self.client.v1.payment_intents.search_async({"query": query, "limit": 1})
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        data = _dict(found).get("data") or []
        return charge_of(_dict(data[0])) if data else None

    async def refund(
        self,
        payment_intent_id: str,
        amount_minor: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        try:
            refund = await self.client.v1.refunds.create_async(
                {
                    "payment_intent": payment_intent_id,
                    "amount": amount_minor,
                    "metadata": dict(metadata),
                },
                {"idempotency_key": idempotency_key},
            )
        except stripe.InvalidRequestError as exc:
            raise ProviderError(
                str(exc.user_message or exc), code=exc.code or "refund_refused"
            ) from exc
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return refund_of(_dict(refund))

    def verify_webhook(self, body: bytes, signature_header: str | None) -> ProviderEvent:
        if not signature_header:
            raise InvalidWebhook("missing Stripe-Signature header")
        if not self.webhook_secrets:
            raise InvalidWebhook("no webhook secret configured")
        last: Exception | None = None
        for secret in self.webhook_secrets:
            try:
                event = stripe.Webhook.construct_event(body, signature_header, secret)
            except stripe.SignatureVerificationError as exc:
                last = exc
                continue
            except ValueError as exc:  # signed, but not JSON
                raise InvalidWebhook(f"body is not a JSON event: {exc}") from exc
            raw = _dict(event)
            if not raw.get("id") or not raw.get("type"):
                raise InvalidWebhook("body is not a Stripe event")
            return event_of(raw)
        raise InvalidWebhook(f"signature verification failed: {last}")

    async def events_since(self, since: datetime) -> list[ProviderEvent]:
        """Every applied-kind event created at or after ``since``, oldest first."""
        found: list[ProviderEvent] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {
                "created": {"gte": int(since.timestamp())},
                "types": list(APPLIED_KINDS),
                "limit": EVENTS_PAGE,
            }
            if after:
                params["starting_after"] = after
            try:
                page = await self.client.v1.events.list_async(params)  # type: ignore[arg-type]
            except stripe.StripeError as exc:
                raise _provider_error(exc) from exc
            data = [_dict(e) for e in page.data]
            found.extend(event_of(e) for e in data)
            if not page.has_more or not data:
                break
            after = str(data[-1]["id"])
        # Stripe lists newest first; apply in the order things happened.
        return sorted(found, key=lambda e: e.created)
