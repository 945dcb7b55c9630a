"""SQL for the catalog schema (SQLAlchemy 2 async).

Holds only the kit's outbox and inbox tables until the catalog issue adds its own.
"""

from __future__ import annotations

from services.kit.tables import service_metadata

SCHEMA = "catalog"
metadata = service_metadata(SCHEMA)
