"""The catalog's unit of work: the kit's transaction plus this schema's repository."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

from services.catalog.repository import CatalogRepository
from services.kit.clock import Clock, SystemClock
from services.kit.db import Database
from services.kit.outbox import Outbox
from services.kit.uow import UnitOfWork


class CatalogUnitOfWork(UnitOfWork):
    repo: CatalogRepository

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        on_events_committed: Callable[[], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(database, outbox, on_events_committed)
        self.clock: Clock = clock or SystemClock()

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.repo = CatalogRepository(self.session)
        return self
