"""How much of a captured payment may still be refunded."""

from __future__ import annotations

from collections.abc import Iterable

from services.payments.domain.states import RefundState


def refundable(captured: int, refunds: Iterable[tuple[RefundState, int]]) -> int:
    """Captured minus every refund that succeeded or may still succeed."""
    held = sum(amount for state, amount in refunds if state is not RefundState.FAILED)
    return max(0, captured - held)
