"""Usage rows keep the cost of their tokens, priced when the request ends (see platform/usage.py).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows metered before this revision keep NULL: reports price them as before, at the deployment's current prices.
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("cost_usd", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("cost_usd")
