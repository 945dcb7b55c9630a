"""The emulated account: objects, test-card outcomes and the events they raise.

Plain synchronous code over dicts shaped like Stripe's JSON; the server and the
webhook queue sit around it. ``on_event`` receives every event as it is made and
``schedule`` runs a callback later (the bank-debit-like ``processing_delay``).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.stripe_emulator import params as p
from devtools.stripe_emulator.cards import TEST_CARDS, Behaviour, TestCard
from devtools.stripe_emulator.errors import StripeError, invalid, missing, not_found
from devtools.stripe_emulator.ids import new_id

Obj = dict[str, Any]
Params = dict[str, Any]

_KIND = {
    "customer": "customer",
    "payment_method": "PaymentMethod",
    "setup_intent": "setupintent",
    "payment_intent": "payment_intent",
    "charge": "charge",
    "refund": "refund",
    "dispute": "dispute",
    "event": "event",
}

_MESSAGES = {
    "card_declined": "Your card was declined.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}

_REOPENED = ("requires_payment_method", "requires_confirmation", "requires_action")


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Account:
    """What the account holds, in creation order (lists are newest first by reversing it)."""

    objects: dict[str, Obj]
    events: list[Obj]
    cards: dict[str, TestCard]


class Store:
    def __init__(
        self,
        api_version: str,
        on_event: Callable[[Obj], None],
        schedule: Callable[[float, Callable[[], None]], None],
    ) -> None:
        self.api_version = api_version
        self.on_event = on_event
        self.schedule = schedule
        self.processing_delay: float | None = None
        self.objects: dict[str, Obj] = {}
        self.events: list[Obj] = []
        self.cards: dict[str, TestCard] = {}
        # The request an event is attributed to; None for what happens later on its own.
        self.request: Obj = {"id": None, "idempotency_key": None}

    def snapshot(self) -> Account:
        """The live account, not a copy: encode it before the next request changes it."""
        return Account(self.objects, self.events, self.cards)

    def restore(self, account: Account) -> None:
        self.objects = dict(account.objects)
        self.events = list(account.events)
        self.cards = dict(account.cards)

    # -- plumbing ---------------------------------------------------------

    def _add(self, obj: Obj) -> Obj:
        self.objects[obj["id"]] = obj
        return obj

    def get(self, object_type: str, object_id: str, param: str = "id") -> Obj:
        obj = self.objects.get(object_id)
        if obj is None or obj.get("object") != object_type:
            raise not_found(_KIND[object_type], object_id, param)
        return obj

    def _of_type(self, object_type: str) -> list[Obj]:
        """Newest first, as every Stripe list is."""
        return [o for o in reversed(self.objects.values()) if o.get("object") == object_type]

    def _emit(self, event_type: str, obj: Obj) -> None:
        event: Obj = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": self.api_version,
            "created": _now(),
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": dict(self.request),
            "type": event_type,
        }
        self.events.append(event)
        self.on_event(event)

    def _customer_param(self, params: Params) -> str | None:
        customer = p.text(params, "customer")
        if customer is not None:
            self.get("customer", customer, "customer")
        return customer

    # -- customers ----------------------------------------------------------

    def create_customer(self, params: Params) -> Obj:
        customer = self._add(
            {
                "id": new_id("cus"),
                "object": "customer",
                "address": None,
                "balance": 0,
                "created": _now(),
                "currency": None,
                "default_source": None,
                "delinquent": False,
                "description": p.text(params, "description"),
                "email": p.text(params, "email"),
                "invoice_prefix": None,
                "invoice_settings": {
                    "custom_fields": None,
                    "default_payment_method": None,
                    "footer": None,
                    "rendering_options": None,
                },
                "livemode": False,
                "metadata": p.metadata(params),
                "name": p.text(params, "name"),
                "phone": p.text(params, "phone"),
                "preferred_locales": [],
                "tax_exempt": "none",
            }
        )
        payment_method = p.text(params, "payment_method")
        if payment_method is not None:
            self._attach(self.payment_method_for(payment_method), customer)
        self._apply_invoice_settings(customer, params)
        self._emit("customer.created", customer)
        return customer

    def update_customer(self, customer_id: str, params: Params) -> Obj:
        customer = self.get("customer", customer_id)
        for field in ("email", "name", "description", "phone"):
            if field in params:
                customer[field] = p.text(params, field)
        customer["metadata"] = p.metadata(params, customer["metadata"])
        self._apply_invoice_settings(customer, params)
        self._emit("customer.updated", customer)
        return customer

    def _apply_invoice_settings(self, customer: Obj, params: Params) -> None:
        settings = params.get("invoice_settings")
        if not isinstance(settings, dict) or "default_payment_method" not in settings:
            return
        pm_id = settings["default_payment_method"] or None
        if pm_id is not None:
            pm = self.get("payment_method", pm_id, "invoice_settings[default_payment_method]")
            if pm["customer"] != customer["id"]:
                raise invalid(
                    "invoice_settings[default_payment_method]",
                    f"The customer does not have a payment method with the ID {pm_id}."
                    " The payment method must be attached to the customer.",
                    "resource_missing",
                )
        customer["invoice_settings"]["default_payment_method"] = pm_id

    # -- payment methods ------------------------------------------------------

    def payment_method_for(self, ref: str, param: str = "payment_method") -> Obj:
        """An existing pm, or a fresh one for a test token (as Stripe makes one per use)."""
        card = TEST_CARDS.get(ref)
        if card is None:
            return self.get("payment_method", ref, param)
        pm = self._add(
            {
                "id": new_id("pm"),
                "object": "payment_method",
                "allow_redisplay": "unspecified",
                "billing_details": {
                    "address": {
                        "city": None,
                        "country": None,
                        "line1": None,
                        "line2": None,
                        "postal_code": None,
                        "state": None,
                    },
                    "email": None,
                    "name": None,
                    "phone": None,
                },
                "card": {
                    "brand": card.brand,
                    "checks": {
                        "address_line1_check": None,
                        "address_postal_code_check": None,
                        "cvc_check": "pass",
                    },
                    "country": card.country,
                    "display_brand": card.brand,
                    "exp_month": 12,
                    "exp_year": time.gmtime().tm_year + 3,
                    "fingerprint": new_id("fp")[3:19],
                    "funding": card.funding,
                    "last4": card.last4,
                    "networks": {"available": [card.brand], "preferred": None},
                    "wallet": None,
                },
                "created": _now(),
                "customer": None,
                "livemode": False,
                "metadata": {},
                "type": "card",
            }
        )
        self.cards[pm["id"]] = card
        return pm

    def _attach(self, pm: Obj, customer: Obj) -> None:
        if pm["customer"] == customer["id"]:
            return
        if pm["customer"] is not None:
            raise invalid(
                "payment_method",
                "The payment method you provided has already been attached to a customer.",
                "payment_method_unexpected_state",
            )
        pm["customer"] = customer["id"]
        self._emit("payment_method.attached", pm)

    def attach_payment_method(self, ref: str, params: Params) -> Obj:
        customer = self.get("customer", p.required_text(params, "customer"), "customer")
        pm = self.payment_method_for(ref, "id")
        self._attach(pm, customer)
        return pm

    def detach_payment_method(self, pm_id: str) -> Obj:
        pm = self.get("payment_method", pm_id)
        if pm["customer"] is None:
            raise invalid(
                "payment_method",
                "The payment method you provided is not attached to a customer"
                " so detachment is impossible.",
                "payment_method_unexpected_state",
            )
        customer = self.objects.get(pm["customer"])
        if customer is not None and customer["invoice_settings"]["default_payment_method"] == pm_id:
            customer["invoice_settings"]["default_payment_method"] = None
        pm["customer"] = None
        self._emit("payment_method.detached", pm)
        return pm

    def list_payment_methods(self, params: Params, url: str, customer_id: str | None = None) -> Obj:
        if customer_id is not None:
            self.get("customer", customer_id)
        else:
            customer_id = self._customer_param(params)
        kind = p.text(params, "type")
        items = [
            pm
            for pm in self._of_type("payment_method")
            if (customer_id is None or pm["customer"] == customer_id)
            and (kind is None or pm["type"] == kind)
        ]
        return self.page(items, params, url, "payment_method")

    # -- setup intents ----------------------------------------------------------

    def create_setup_intent(self, params: Params) -> Obj:
        customer = self._customer_param(params)
        pm_ref = p.text(params, "payment_method")
        pm = self.payment_method_for(pm_ref) if pm_ref else None
        seti_id = new_id("seti")
        seti = self._add(
            {
                "id": seti_id,
                "object": "setup_intent",
                "cancellation_reason": None,
                "client_secret": f"{seti_id}_secret_{new_id('x')[2:]}",
                "created": _now(),
                "customer": customer,
                "description": p.text(params, "description"),
                "last_setup_error": None,
                "latest_attempt": None,
                "livemode": False,
                "metadata": p.metadata(params),
                "next_action": None,
                "payment_method": pm["id"] if pm else None,
                "payment_method_types": p.string_list(params, "payment_method_types") or ["card"],
                "status": "requires_confirmation" if pm else "requires_payment_method",
                "usage": p.text(params, "usage") or "off_session",
            }
        )
        self._emit("setup_intent.created", seti)
        if p.boolean(params, "confirm"):
            self._confirm_setup(seti, params)
        return seti

    def confirm_setup_intent(self, seti_id: str, params: Params) -> Obj:
        seti = self.get("setup_intent", seti_id)
        self._confirm_setup(seti, params)
        return seti

    def _confirm_setup(self, seti: Obj, params: Params) -> None:
        if seti["status"] not in _REOPENED:
            raise StripeError(
                400,
                f"You cannot confirm this SetupIntent because it has a status of {seti['status']}.",
                code="setup_intent_unexpected_state",
            )
        pm_ref = p.text(params, "payment_method")
        if pm_ref:
            seti["payment_method"] = self.payment_method_for(pm_ref)["id"]
        if seti["payment_method"] is None:
            raise missing("payment_method")
        pm = self.objects[seti["payment_method"]]
        if seti["customer"] is not None:
            self._attach(pm, self.objects[seti["customer"]])
        seti["status"] = "succeeded"
        seti["latest_attempt"] = new_id("setatt")
        self._emit("setup_intent.succeeded", seti)

    # -- payment intents ------------------------------------------------------

    def create_payment_intent(self, params: Params) -> Obj:
        amount = p.integer(params, "amount", required=True, minimum=1)
        currency = p.required_text(params, "currency").lower()
        if len(currency) != 3 or not currency.isalpha():
            raise invalid("currency", f"Invalid currency: {currency}.", "parameter_invalid_string")
        customer = self._customer_param(params)
        pm_ref = p.text(params, "payment_method")
        pm = self.payment_method_for(pm_ref) if pm_ref else None
        pi_id = new_id("pi")
        pi = self._add(
            {
                "id": pi_id,
                "object": "payment_intent",
                "amount": amount,
                "amount_capturable": 0,
                "amount_received": 0,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": "automatic",
                "client_secret": f"{pi_id}_secret_{new_id('x')[2:]}",
                "confirmation_method": "automatic",
                "created": _now(),
                "currency": currency,
                "customer": customer,
                "description": p.text(params, "description"),
                "last_payment_error": None,
                "latest_charge": None,
                "livemode": False,
                "metadata": p.metadata(params),
                "next_action": None,
                "payment_method": pm["id"] if pm else None,
                "payment_method_types": p.string_list(params, "payment_method_types") or ["card"],
                "receipt_email": p.text(params, "receipt_email"),
                "setup_future_usage": p.text(params, "setup_future_usage"),
                "statement_descriptor": p.text(params, "statement_descriptor"),
                "status": "requires_confirmation" if pm else "requires_payment_method",
            }
        )
        self._emit("payment_intent.created", pi)
        if p.boolean(params, "confirm"):
            self._confirm_payment(pi, params)
        return pi

    def confirm_payment_intent(self, pi_id: str, params: Params) -> Obj:
        pi = self.get("payment_intent", pi_id)
        self._confirm_payment(pi, params)
        return pi

    def cancel_payment_intent(self, pi_id: str, params: Params) -> Obj:
        pi = self.get("payment_intent", pi_id)
        if pi["status"] not in _REOPENED:
            raise StripeError(
                400,
                "You cannot cancel this PaymentIntent because it has a status of"
                f" {pi['status']}. Only a PaymentIntent with one of the following statuses"
                " may be canceled: requires_payment_method, requires_capture,"
                " requires_confirmation, requires_action, processing.",
                code="payment_intent_unexpected_state",
            )
        pi["status"] = "canceled"
        pi["canceled_at"] = _now()
        pi["cancellation_reason"] = p.text(params, "cancellation_reason")
        self._emit("payment_intent.canceled", pi)
        return pi

    def _confirm_payment(self, pi: Obj, params: Params) -> None:
        if pi["status"] not in _REOPENED:
            raise StripeError(
                400,
                f"This PaymentIntent's status is {pi['status']},"
                " which does not allow confirmation.",
                code="payment_intent_unexpected_state",
                payment_intent=copy.deepcopy(pi),
            )
        pm_ref = p.text(params, "payment_method")
        if pm_ref:
            pi["payment_method"] = self.payment_method_for(pm_ref)["id"]
            pi["status"] = "requires_confirmation"
        if pi["payment_method"] is None:
            raise StripeError(
                400,
                "You cannot confirm this PaymentIntent because it's missing a payment method."
                " To confirm the PaymentIntent with a customer, pass `payment_method`.",
                code="payment_intent_unexpected_state",
                param="payment_method",
                payment_intent=copy.deepcopy(pi),
            )
        card = self.cards[pi["payment_method"]]
        # Confirming again after requires_action stands for the customer passing 3-D Secure.
        authenticated = pi["status"] == "requires_action"
        if card.behaviour is Behaviour.AUTHENTICATE and not authenticated:
            if p.boolean(params, "off_session"):
                self._fail_and_raise(pi, "authentication_required", "authentication_required")
            pi["status"] = "requires_action"
            pi["next_action"] = {
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": ""},
            }
            self._emit("payment_intent.requires_action", pi)
            return
        pi["next_action"] = None
        if self.processing_delay is not None:
            pi["status"] = "processing"
            self._emit("payment_intent.processing", pi)
            pi_id = pi["id"]
            self.schedule(self.processing_delay, lambda: self._settle(pi_id))
            return
        if card.behaviour is Behaviour.DECLINE:
            self._fail_and_raise(pi, "card_declined", "generic_decline")
        self._succeed(pi)

    def _settle(self, pi_id: str) -> None:
        pi = self.objects[pi_id]
        if pi["status"] != "processing":
            return
        self.request = {"id": None, "idempotency_key": None}
        if self.cards[pi["payment_method"]].behaviour is Behaviour.DECLINE:
            self._fail(pi, "card_declined", "generic_decline")
        else:
            self._succeed(pi)

    def _charge(self, pi: Obj, *, failure_code: str | None = None) -> Obj:
        pm = self.objects[pi["payment_method"]]
        succeeded = failure_code is None
        amount = pi["amount"]
        charge_id = new_id("ch")
        return self._add(
            {
                "id": charge_id,
                "object": "charge",
                "amount": amount,
                "amount_captured": amount if succeeded else 0,
                "amount_refunded": 0,
                "balance_transaction": new_id("txn") if succeeded else None,
                "billing_details": pm["billing_details"],
                "captured": succeeded,
                "created": _now(),
                "currency": pi["currency"],
                "customer": pi["customer"],
                "description": pi["description"],
                "disputed": False,
                "failure_code": failure_code,
                "failure_message": _MESSAGES.get(failure_code or ""),
                "livemode": False,
                "metadata": dict(pi["metadata"]),
                "outcome": {
                    "network_status": "approved_by_network" if succeeded else "declined_by_network",
                    "reason": None if succeeded else failure_code,
                    "risk_level": "normal",
                    "seller_message": "Payment complete."
                    if succeeded
                    else "The bank declined the payment.",
                    "type": "authorized" if succeeded else "issuer_declined",
                },
                "paid": succeeded,
                "payment_intent": pi["id"],
                "payment_method": pm["id"],
                "payment_method_details": {"type": "card", "card": dict(pm["card"])},
                "receipt_email": pi["receipt_email"],
                "refunded": False,
                "refunds": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": 0,
                    "url": f"/v1/charges/{charge_id}/refunds",
                },
                "status": "succeeded" if succeeded else "failed",
            }
        )

    def _succeed(self, pi: Obj) -> None:
        charge = self._charge(pi)
        pi["status"] = "succeeded"
        pi["amount_received"] = pi["amount"]
        pi["latest_charge"] = charge["id"]
        pi["last_payment_error"] = None
        self._emit("charge.succeeded", charge)
        self._emit("payment_intent.succeeded", pi)

    def _fail(self, pi: Obj, code: str, decline_code: str) -> Obj:
        """Applies a failed attempt; returns Stripe's card_error body for it."""
        charge = self._charge(pi, failure_code=code)
        pm = self.objects[pi["payment_method"]]
        error: Obj = {
            "charge": charge["id"],
            "code": code,
            "decline_code": decline_code,
            "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
            "message": _MESSAGES[code],
            "payment_method": copy.deepcopy(pm),
            "type": "card_error",
        }
        pi["status"] = "requires_payment_method"
        pi["latest_charge"] = charge["id"]
        pi["last_payment_error"] = error
        # Stripe forgets a failed payment method: a retry must name one again.
        pi["payment_method"] = None
        self._emit("charge.failed", charge)
        self._emit("payment_intent.payment_failed", pi)
        return error

    def _fail_and_raise(self, pi: Obj, code: str, decline_code: str) -> None:
        error = self._fail(pi, code, decline_code)
        body = {k: v for k, v in error.items() if k not in ("type", "message", "code")}
        raise StripeError(
            402,
            error["message"],
            type="card_error",
            code=code,
            payment_intent=copy.deepcopy(pi),
            **body,
        )

    # -- refunds and disputes -------------------------------------------------

    def _refundable_charge(self, params: Params) -> Obj:
        charge_id = p.text(params, "charge")
        pi_id = p.text(params, "payment_intent")
        if charge_id is None and pi_id is None:
            raise missing("payment_intent")
        if charge_id is None:
            assert pi_id is not None
            pi = self.get("payment_intent", pi_id, "payment_intent")
            if pi["status"] != "succeeded":
                raise invalid(
                    "payment_intent",
                    f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                    "charge_not_refundable",
                )
            charge_id = pi["latest_charge"]
        assert charge_id is not None
        charge = self.get("charge", charge_id, "charge")
        if charge["status"] != "succeeded":
            raise invalid(
                "charge", f"Charge {charge_id} has not succeeded.", "charge_not_refundable"
            )
        return charge

    def create_refund(self, params: Params) -> Obj:
        charge = self._refundable_charge(params)
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left <= 0:
            raise invalid(
                "charge",
                f"Charge {charge['id']} has already been refunded.",
                "charge_already_refunded",
            )
        amount = p.integer(params, "amount", minimum=1)
        if amount is None:
            amount = left
        if amount > left:
            raise invalid(
                "amount",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                "amount_too_large",
            )
        refund = self._add(
            {
                "id": new_id("re"),
                "object": "refund",
                "amount": amount,
                "balance_transaction": new_id("txn"),
                "charge": charge["id"],
                "created": _now(),
                "currency": charge["currency"],
                "metadata": p.metadata(params),
                "payment_intent": charge["payment_intent"],
                "reason": p.text(params, "reason"),
                "receipt_number": None,
                "status": "succeeded",
            }
        )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        refunds = charge["refunds"]
        refunds["data"].insert(0, refund)
        refunds["total_count"] += 1
        self._emit("charge.refunded", charge)
        self._emit("refund.created", refund)
        return refund

    def list_refunds(self, params: Params, url: str) -> Obj:
        pi_id = p.text(params, "payment_intent")
        charge_id = p.text(params, "charge")
        items = [
            r
            for r in self._of_type("refund")
            if (pi_id is None or r["payment_intent"] == pi_id)
            and (charge_id is None or r["charge"] == charge_id)
        ]
        return self.page(self._created(items, params), params, url, "refund")

    def create_dispute(self, pi_id: str, amount: int | None = None) -> Obj:
        pi = self.get("payment_intent", pi_id, "payment_intent")
        if pi["status"] != "succeeded":
            raise invalid(
                "payment_intent", f"PaymentIntent {pi_id} has no successful charge to dispute."
            )
        charge = self.objects[pi["latest_charge"]]
        charge["disputed"] = True
        dispute = self._add(
            {
                "id": new_id("dp"),
                "object": "dispute",
                "amount": charge["amount"] if amount is None else amount,
                "balance_transactions": [],
                "charge": charge["id"],
                "created": _now(),
                "currency": charge["currency"],
                "evidence_details": {
                    "due_by": _now() + 7 * 86400,
                    "has_evidence": False,
                    "past_due": False,
                    "submission_count": 0,
                },
                "is_charge_refundable": False,
                "livemode": False,
                "metadata": {},
                "payment_intent": pi_id,
                "reason": "fraudulent",
                "status": "needs_response",
            }
        )
        self.request = {"id": None, "idempotency_key": None}
        self._emit("charge.dispute.created", dispute)
        return dispute

    # -- lists and events -----------------------------------------------------

    def list_payment_intents(self, params: Params, url: str) -> Obj:
        customer = p.text(params, "customer")
        items = [
            pi
            for pi in self._of_type("payment_intent")
            if customer is None or pi["customer"] == customer
        ]
        return self.page(self._created(items, params), params, url, "payment_intent")

    def search_payment_intents(self, params: Params, url: str) -> Obj:
        """Stripe's search, for the one query shape payments uses: metadata clauses and AND."""
        query = p.text(params, "query") or ""
        wanted = _metadata_clauses(query)
        items = [
            pi
            for pi in reversed(self._of_type("payment_intent"))
            if all(pi["metadata"].get(k) == v for k, v in wanted)
        ]
        limit = p.integer(params, "limit", minimum=1) or 10
        return {
            "object": "search_result",
            "data": items[:limit],
            "has_more": len(items) > limit,
            "next_page": None,
            "url": url,
        }

    def list_events(self, params: Params, url: str) -> Obj:
        types = set(p.string_list(params, "types") or [])
        single = p.text(params, "type")
        if single:
            types.add(single)

        def matches(event_type: str) -> bool:
            if not types:
                return True
            # Stripe accepts one trailing wildcard, e.g. "charge.*".
            return any(
                event_type == t or (t.endswith("*") and event_type.startswith(t[:-1]))
                for t in types
            )

        items = [e for e in reversed(self.events) if matches(e["type"])]
        return self.page(self._created(items, params), params, url, "event")

    def get_event(self, event_id: str) -> Obj:
        for event in self.events:
            if event["id"] == event_id:
                return event
        raise not_found("event", event_id)

    @staticmethod
    def _created(items: list[Obj], params: Params) -> list[Obj]:
        created = params.get("created")
        if created is None:
            return items
        if not isinstance(created, dict):
            exact = p.integer(params, "created")
            return [o for o in items if o["created"] == exact]
        bounds = {op: p.integer(created, op) for op in ("gt", "gte", "lt", "lte")}
        unknown = set(created) - set(bounds)
        if unknown:
            raise invalid(
                f"created[{sorted(unknown)[0]}]", "Received unknown parameter", "parameter_unknown"
            )

        def within(t: int) -> bool:
            gt, gte, lt, lte = bounds["gt"], bounds["gte"], bounds["lt"], bounds["lte"]
            return (
                (gt is None or t > gt)
                and (gte is None or t >= gte)
                and (lt is None or t < lt)
                and (lte is None or t <= lte)
            )

        return [o for o in items if within(o["created"])]

    def page(self, items: list[Obj], params: Params, url: str, object_type: str) -> Obj:
        """One page of a newest-first list, with Stripe's cursor parameters."""
        limit = p.integer(params, "limit", minimum=1)
        limit = 10 if limit is None else limit
        if limit > 100:
            raise invalid(
                "limit",
                "This value must be less than or equal to 100.",
                "parameter_invalid_integer",
            )
        after = p.text(params, "starting_after")
        before = p.text(params, "ending_before")
        ids = [o["id"] for o in items]
        if after is not None:
            if after not in ids:
                raise not_found(_KIND[object_type], after, "starting_after")
            rest = items[ids.index(after) + 1 :]
            chunk, has_more = rest[:limit], len(rest) > limit
        elif before is not None:
            if before not in ids:
                raise not_found(_KIND[object_type], before, "ending_before")
            rest = items[: ids.index(before)]
            chunk, has_more = rest[-limit:], len(rest) > limit
        else:
            chunk, has_more = items[:limit], len(items) > limit
        return {"object": "list", "data": chunk, "has_more": has_more, "url": url}


_METADATA_CLAUSE = re.compile(r"metadata\['([^']+)'\]:'([^']*)'")


def _metadata_clauses(query: str) -> list[tuple[str, str]]:
    clauses = [c.strip() for c in query.split(" AND ")]
    matched = [_METADATA_CLAUSE.fullmatch(c) for c in clauses]
    if not query.strip() or not all(matched):
        # The real API parses a far larger grammar; anything else here is a
        # provider change the emulator must learn first, so say so loudly.
        raise invalid("query", f"The emulator searches metadata['key']:'value' only: {query!r}")
    return [(m.group(1), m.group(2)) for m in matched if m is not None]
