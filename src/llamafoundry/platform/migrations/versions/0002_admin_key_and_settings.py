"""The management API's admin key, and per-deployment settings (rate limits, content safety, prices).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    # Existing deployments get empty settings: every setting has a default that follows the deployment type.
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("settings", sa.JSON, nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("settings")
    op.drop_table("admin_keys")
