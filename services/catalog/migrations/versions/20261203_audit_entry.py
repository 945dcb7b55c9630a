"""The kit's audit trail table in the catalog schema (services/kit/audit.py).

Revision ID: c0a1f0000003
Revises: c0a1f0000002
Create Date: 2026-12-03
"""

from __future__ import annotations

from services.kit.migrations import kit_audit_v1_downgrade, kit_audit_v1_upgrade

revision = "c0a1f0000003"
down_revision = "c0a1f0000002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    kit_audit_v1_upgrade()


def downgrade() -> None:
    kit_audit_v1_downgrade()
