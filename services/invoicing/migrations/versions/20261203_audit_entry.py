"""The kit's audit trail table in the invoicing schema (services/kit/audit.py).

Revision ID: 1e0a1f000004
Revises: 1e0a1f000003
Create Date: 2026-12-03
"""

from __future__ import annotations

from services.kit.migrations import kit_audit_v1_downgrade, kit_audit_v1_upgrade

revision = "1e0a1f000004"
down_revision = "1e0a1f000003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    kit_audit_v1_upgrade()


def downgrade() -> None:
    kit_audit_v1_downgrade()
