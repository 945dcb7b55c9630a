"""The kit's audit trail table in the usage schema (services/kit/audit.py).

Revision ID: 0a9e1f000302
Revises: 0a9e1f000301
Create Date: 2026-12-03
"""

from __future__ import annotations

from services.kit.migrations import kit_audit_v1_downgrade, kit_audit_v1_upgrade

revision = "0a9e1f000302"
down_revision = "0a9e1f000301"
branch_labels = None
depends_on = None


def upgrade() -> None:
    kit_audit_v1_upgrade()


def downgrade() -> None:
    kit_audit_v1_downgrade()
