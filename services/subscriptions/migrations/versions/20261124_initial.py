"""The subscriptions schema with the kit's outbox and inbox tables.

Revision ID: 5b0a1f000001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from services.kit.migrations import kit_tables_v1_downgrade, kit_tables_v1_upgrade

revision = "5b0a1f000001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    kit_tables_v1_upgrade()


def downgrade() -> None:
    kit_tables_v1_downgrade()
