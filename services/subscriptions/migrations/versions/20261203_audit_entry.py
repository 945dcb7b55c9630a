"""The kit's audit trail table in the subscriptions schema (services/kit/audit.py).

Revision ID: 5b0a1f000003
Revises: 5b0a1f000002
Create Date: 2026-12-03
"""

from __future__ import annotations

from services.kit.migrations import kit_audit_v1_downgrade, kit_audit_v1_upgrade

revision = "5b0a1f000003"
down_revision = "5b0a1f000002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    kit_audit_v1_upgrade()


def downgrade() -> None:
    kit_audit_v1_downgrade()
