"""``billing.payment.attempts{outcome}``: charges tried at the payment provider."""

from __future__ import annotations

from opentelemetry import metrics

_attempts = metrics.get_meter("tally.payments").create_counter(
    "billing.payment.attempts",
    unit="{attempt}",
    description="Payment attempts at the provider, by outcome (succeeded, failed, ...)",
)


def record_attempt(outcome: str) -> None:
    """Count one attempt; call after the transaction recording it committed."""
    _attempts.add(1, {"outcome": outcome})


_webhook_attempts = metrics.get_meter("tally.payments").create_counter(
    "billing.webhook.attempts",
    unit="{attempt}",
    description=(
        "Outbound webhook attempts, by outcome: succeeded, retrying (a retry is"
        " scheduled), failed (the delivery's schedule is over)"
    ),
)


def record_webhook_attempt(outcome: str) -> None:
    """Count one outbound webhook attempt; call after its record committed."""
    _webhook_attempts.add(1, {"outcome": outcome})
