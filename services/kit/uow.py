"""Unit of work: one transaction per use case, events included.

Handlers do ``async with uow: ...; await uow.commit()``. Events emitted inside
are written to the outbox in the same transaction, so the change and its events
commit or vanish together. Services subclass it to hang their repositories on
the session.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.db import Database
from services.kit.events import HEADER_ORDERING_KEY, EventEnvelope
from services.kit.outbox import Outbox


class UnitOfWork:
    session: AsyncSession

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.outbox = outbox
        self._on_events_committed = on_events_committed
        self._pending: list[EventEnvelope] = []
        self._after_commit: list[Callable[[], None]] = []
        self._done = False

    async def __aenter__(self) -> Self:
        self.session = self.database.sessions()
        await self.session.begin()
        self._pending = []
        self._after_commit = []
        self._done = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._done:
                await self.rollback()
        finally:
            await self.session.close()

    def emit(self, event: Message, *, aggregate_id: str, ordering_key: str = "") -> EventEnvelope:
        """Record an event to publish if, and only if, this unit commits.

        ``ordering_key``: see ``HEADER_ORDERING_KEY``; the aggregate id when empty.
        """
        context: dict[str, str] = {}
        propagate.inject(context)  # the consumer's span continues this trace
        if ordering_key:
            # Carried with the trace context: the outbox keeps extra headers there.
            context[HEADER_ORDERING_KEY] = ordering_key
        envelope = EventEnvelope.wrap(event, aggregate_id=aggregate_id, context=context)
        self._pending.append(envelope)
        return envelope

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this unit commits (never if it rolls back).

        For effects outside the transaction that must not run for a change
        that never happened, such as counting it in a metric.
        """
        self._after_commit.append(callback)

    @property
    def emitted(self) -> tuple[EventEnvelope, ...]:
        return tuple(self._pending)

    async def commit(self) -> None:
        had_events = bool(self._pending)
        await self.outbox.write(self.session, self._pending)
        await self.session.commit()
        self._done = True
        self._pending = []
        callbacks, self._after_commit = self._after_commit, []
        if had_events and self._on_events_committed:
            self._on_events_committed()
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        self._pending = []
        self._after_commit = []
        self._done = True
        await self.session.rollback()
