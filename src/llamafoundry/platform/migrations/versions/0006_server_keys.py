"""The hash of each running server's own `--api-key`, so that a deployment key can be refused when it equals one
(`deploy keys --regenerate --value` and the management API work on the store, without the server).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_keys",
        sa.Column("server", sa.String(255), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
