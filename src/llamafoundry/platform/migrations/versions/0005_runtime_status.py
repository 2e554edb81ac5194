"""What each running server reports about the deployments it serves (state, replicas, crashes), so that
`deploy show` can tell without a server connection.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_runtime",
        sa.Column("deployment", sa.String(64), primary_key=True),  # no foreign key: written after a delete too
        sa.Column("server", sa.String(255), primary_key=True),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deployment_runtime")
