"""Projects, project keys, token grants, budgets and the audit log. Every existing deployment moves into the
project `default` (nothing else changes for it); usage rows of those deployments are marked `default` too.

One serverless deployment per model now holds per project. `deployments.project` has no foreign key: on SQLite
adding one means re-creating `deployments`, and dropping the old table would cascade into its keys; the platform
refuses to delete a project that still has deployments instead.

A store that served managed deployments before had every valid token (of any subject) open them; such a store
gets a grant of `default` to any token of the configured issuer, so nothing stops working on upgrade (`project
show default` lists it, `project revoke-grant default --any` removes it).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SERVERLESS_ONLY = sa.text("type = 'serverless'")


def upgrade() -> None:
    now = time.time()
    projects = op.create_table(
        "projects",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.bulk_insert(projects, [{"name": "default", "description": "The project of every deployment made before "
                                                                 "projects existed.", "created_at": now}])  # fmt: skip
    op.drop_index("one_serverless_per_model", "deployments")
    op.add_column("deployments", sa.Column("project", sa.String(64), nullable=False, server_default="default"))
    op.create_index("one_serverless_per_model_per_project", "deployments", ["project", "model"], unique=True,
                    sqlite_where=SERVERLESS_ONLY, postgresql_where=SERVERLESS_ONLY)  # fmt: skip
    _access_tables()
    _budget_tables()
    _audit_table()
    op.add_column("usage", sa.Column("project", sa.String(64)))
    op.execute("UPDATE usage SET project = 'default' WHERE deployment IN (SELECT name FROM deployments)")
    op.create_index("ix_usage_project_created_at", "usage", ["project", "created_at"])
    op.create_index("ix_usage_key_id_created_at", "usage", ["key_id", "created_at"])
    _grant_legacy_tokens(now)


def _access_tables() -> None:
    op.create_table(
        "project_keys",
        sa.Column("id", sa.String(32), primary_key=True),  # `key-` and 12 hex digits of the hash
        sa.Column("project", sa.String(64), sa.ForeignKey("projects.name", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("deployments", sa.JSON),  # None: every deployment of the project
        sa.Column("tokens_per_minute", sa.Integer),
        sa.Column("requests_per_minute", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.UniqueConstraint("project", "name", name="uq_project_keys_name"),
    )
    op.create_table(
        "project_grants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), sa.ForeignKey("projects.name", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # subject, group, app_role, any
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("deployments", sa.JSON),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("project", "kind", "value", name="uq_project_grants"),
    )


def _budget_tables() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), sa.ForeignKey("projects.name", ondelete="CASCADE"), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),  # `project`, or a project key's id
        sa.Column("period", sa.String(8), nullable=False),  # day, month (UTC)
        sa.Column("amount_usd", sa.Float, nullable=False),
        sa.Column("webhook_url", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("project", "scope", "period", name="uq_budgets"),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("budget_id", sa.Integer, sa.ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("period_start", sa.Float, primary_key=True),
        sa.Column("threshold", sa.Integer, primary_key=True),
        sa.Column("sent_at", sa.Float, nullable=False),
    )


def _audit_table() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256)),
        sa.Column("project", sa.String(64)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_project_at", "audit_log", ["project", "at"])


def _grant_legacy_tokens(now: float) -> None:
    bind = op.get_bind()
    has_managed = bind.execute(sa.text("SELECT 1 FROM deployments WHERE type = 'managed' LIMIT 1")).first()
    if has_managed is not None:
        op.execute(
            sa.text(
                "INSERT INTO project_grants (project, kind, value, created_at) VALUES ('default', 'any', '*', :now)"
            ).bindparams(now=now)
        )


def downgrade() -> None:
    op.drop_index("ix_usage_key_id_created_at", "usage")
    op.drop_index("ix_usage_project_created_at", "usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("project")
    op.drop_index("ix_audit_log_project_at", "audit_log")
    op.drop_index("ix_audit_log_at", "audit_log")
    for table in ("audit_log", "budget_alerts", "budgets", "project_grants", "project_keys"):
        op.drop_table(table)
    op.drop_index("one_serverless_per_model_per_project", "deployments")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("project")
    op.create_index("one_serverless_per_model", "deployments", ["model"], unique=True,
                    sqlite_where=SERVERLESS_ONLY, postgresql_where=SERVERLESS_ONLY)  # fmt: skip
    op.drop_table("projects")
