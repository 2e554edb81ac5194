"""Deployments, their primary and secondary keys, and the store revision counter.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("weights_path", sa.Text),
        sa.Column("upstream_url", sa.Text),
        sa.Column("upstream_model", sa.String(256)),
        sa.Column("upstream_api_key", sa.Text),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.Column("instance_type", sa.String(64)),
        sa.Column("shared_quota", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
    )
    # At most one serverless deployment per catalog model, enforced by the database too (two concurrent
    # `deploy create` commands cannot both win).
    op.create_index(
        "one_serverless_per_model",
        "deployments",
        ["model"],
        unique=True,
        sqlite_where=sa.text("type = 'serverless'"),
        postgresql_where=sa.text("type = 'serverless'"),
    )
    op.create_table(
        "deployment_keys",
        sa.Column("deployment", sa.String(64), sa.ForeignKey("deployments.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("slot", sa.String(16), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    state = op.create_table(
        "store_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "revision": 1}])


def downgrade() -> None:
    op.drop_table("store_state")
    op.drop_table("deployment_keys")
    op.drop_index("one_serverless_per_model", "deployments")
    op.drop_table("deployments")
