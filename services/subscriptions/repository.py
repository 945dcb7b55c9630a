"""SQL for the subscriptions schema (SQLAlchemy 2 async).

Holds only the kit's outbox and inbox tables until the subscriptions issue adds its own.
"""

from __future__ import annotations

from services.kit.tables import service_metadata

SCHEMA = "subscriptions"
metadata = service_metadata(SCHEMA)
