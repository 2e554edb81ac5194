"""Downloads as background jobs: one row per deployment whose weights are still being downloaded (its progress,
state and the lease of the server that downloads it), so that `deploy create` returns at once and `deploy show`,
the management API and the portal follow the download.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_downloads",
        sa.Column(
            "deployment", sa.String(64), sa.ForeignKey("deployments.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("hf_repo", sa.String(256), nullable=False),
        sa.Column("hf_file", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),  # downloading, failed, cancelled
        sa.Column("downloaded_bytes", sa.BigInteger, nullable=False),
        sa.Column("total_bytes", sa.BigInteger),
        sa.Column("rate", sa.Float),  # bytes per second, lately
        sa.Column("error", sa.Text),
        sa.Column("owner", sa.String(255)),  # the server (or `deploy create --wait`) downloading it
        sa.Column("lease_until", sa.Float),  # the owner renews it while it downloads; past it, another may take over
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deployment_downloads")
