"""Usage metering: one row per request (see platform/metering.py).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("deployment", sa.String(64), nullable=False),  # no foreign key: usage outlives deployments
        sa.Column("key_id", sa.String(64)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("is_filtered", sa.Boolean, nullable=False),
        sa.Column("is_stream", sa.Boolean, nullable=False),
        sa.Column("time_to_first_token_ms", sa.Float),
    )
    op.create_index("ix_usage_deployment_created_at", "usage", ["deployment", "created_at"])
    op.create_index("ix_usage_created_at", "usage", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_created_at", "usage")
    op.drop_index("ix_usage_deployment_created_at", "usage")
    op.drop_table("usage")
