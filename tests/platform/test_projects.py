"""Projects, project keys, grants, budgets and the audit log on the store, against SQLite and a real PostgreSQL;
and the upgrade of a store made before projects (revision 0006, with data) into the project `default`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from llamafoundry.platform import audit, budgets
from llamafoundry.platform.access import load_access
from llamafoundry.platform.database import MIGRATIONS_DIR, create_engine, database_url, latest_schema_revision
from llamafoundry.platform.deployments import DeploymentSpec, create_deployment
from llamafoundry.platform.errors import DeploymentConflict, DeploymentError, ProjectNotFound
from llamafoundry.platform.keys import hash_key
from llamafoundry.platform.metering import UsageRecord, query_usage, record_all
from llamafoundry.platform.project_keys import create_key, list_keys, match_project_key, revoke_key
from llamafoundry.platform.projects import add_grant, create_project, delete_project, list_grants, list_projects
from llamafoundry.platform.store import Store
from llamafoundry.platform.usage import report, store_pricing
from tests.platform.postgres_server import fresh_database, running_postgres

MODEL = "Meta-Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return database_url(tmp_path)
    return fresh_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store(store_url)
    yield opened
    opened.close()


def deploy(store: Store, tmp_path: Path, name: str, project: str = "default", **fields: object) -> object:
    spec = DeploymentSpec(name=name, model=MODEL, upstream_url="http://127.0.0.1:9/v1", project=project,
                          **fields)  # type: ignore[arg-type]  # fmt: skip
    return create_deployment(store, spec, tmp_path)[0]


def test_upgrading_a_0006_store_with_data_moves_everything_into_default(store_url: str, tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
        conn.execute(sa.text(
            "INSERT INTO deployments (name, model, type, weights_path, instances, shared_quota, created_at, settings) "
            "VALUES ('legacy', :model, 'serverless', '/w.gguf', 1, false, 5.0, '{\"tokens_per_minute\": 7}'), "
            "('legacy-managed', :model, 'managed', '/w.gguf', 1, false, 6.0, '{}')"
        ), {"model": MODEL})  # fmt: skip
        conn.execute(sa.text("INSERT INTO deployment_keys VALUES ('legacy', 'primary', :h, 5.0)"), {"h": hash_key("k")})
        conn.execute(sa.text("INSERT INTO admin_keys VALUES (1, :h, 5.0)"), {"h": hash_key("a")})
        conn.execute(sa.text(
            "INSERT INTO usage (request_id, deployment, key_id, created_at, prompt_tokens, completion_tokens, status, "
            "latency_ms, is_filtered, is_stream, cost_usd) VALUES ('r1', 'legacy', 'key-1', 10.0, 5, 3, 200, 1.0, "
            "false, true, 0.5), ('r2', 'own-model', 'default', 11.0, 5, 3, 200, 1.0, false, false, NULL)"
        ))  # fmt: skip
    engine.dispose()
    upgraded = Store(store_url)
    try:
        assert upgraded.schema_revision() == latest_schema_revision() >= "0007"
        legacy = upgraded.get_deployment("legacy")
        assert legacy is not None and legacy.project == "default" and legacy.settings == {"tokens_per_minute": 7}
        assert [k.key_hash for k in upgraded.keys("legacy")] == [hash_key("k")]
        assert upgraded.admin_key() is not None and upgraded.admin_key().key_hash == hash_key("a")  # type: ignore[union-attr]
        assert [p.name for p in list_projects(upgraded)] == ["default"]
        by_request = {r.request_id: r for r in query_usage(upgraded.engine)}
        assert by_request["r1"].project == "default" and by_request["r1"].cost_usd == 0.5
        assert by_request["r2"].project is None  # the server's own model is in no project
        # tokens opened the managed deployment before: they still do, through a grant that can be removed
        (grant,) = list_grants(upgraded, "default")
        assert (grant.kind, grant.value) == ("any", "*")
        # one serverless deployment per model now holds per project
        create_project(upgraded, "team-a")
        assert deploy(upgraded, tmp_path, "again", project="team-a") is not None
        with pytest.raises(DeploymentConflict, match="in project 'default'"):
            deploy(upgraded, tmp_path, "again-default")
    finally:
        upgraded.close()


def test_a_new_store_has_the_default_project_and_no_grant(store: Store) -> None:
    assert [p.name for p in list_projects(store)] == ["default"]
    assert list_grants(store) == []


def test_project_rules(store: Store, tmp_path: Path) -> None:
    create_project(store, "Team-A", "search")
    with pytest.raises(DeploymentConflict, match="already exists"):
        create_project(store, "team-a")
    with pytest.raises(DeploymentError, match="not a valid project name"):
        create_project(store, "a")
    with pytest.raises(ProjectNotFound, match="Project 'nope' not found"):
        deploy(store, tmp_path, "chat", project="nope")
    deploy(store, tmp_path, "chat", project="team-a")
    deploy(store, tmp_path, "chat-default")  # the same model, serverless, in another project
    with pytest.raises(DeploymentError, match="still has deployments \\(chat\\)"):
        delete_project(store, "team-a")
    with pytest.raises(DeploymentError, match="'default' cannot be deleted"):
        delete_project(store, "default")
    key, _ = create_key(store, "team-a", "ci")
    add_grant(store, "team-a", "group", "g-1")
    budgets.set_budget(store, "team-a", "day", 1.0, key="ci")
    store.delete_deployment("chat")
    delete_project(store, "team-a")  # with its keys, grants and budgets
    assert [p.name for p in list_projects(store)] == ["default"]
    assert list_keys(store) == [] and list_grants(store) == [] and budgets.list_budgets(store) == []


def test_project_keys_are_hashed_scoped_revocable_and_expire(store: Store, tmp_path: Path) -> None:
    create_project(store, "team-a")
    deploy(store, tmp_path, "chat", project="team-a")
    deploy(store, tmp_path, "other", project="team-a", type="managed")
    with pytest.raises(DeploymentError, match="no deployment called 'missing'"):
        create_key(store, "team-a", "bad", ["missing"])
    key, secret = create_key(store, "team-a", "ci", ["chat"], tokens_per_minute=100, expires="1d")
    assert key.key_hash == hash_key(secret) and secret not in repr(list_keys(store, "team-a"))
    assert key.limits is not None and key.limits.tokens_per_minute == 100
    access = load_access(store)
    assert [k.id for k in access.keys_for("team-a", "chat")] == [key.id]
    assert access.keys_for("team-a", "other") == []  # a chosen subset
    now = time.time()
    assert match_project_key(["wrong", secret], access.keys["team-a"], now) == key
    assert match_project_key([secret], access.keys["team-a"], now + 2 * 86400) is None  # expired
    revoke_key(store, "team-a", "ci")
    assert load_access(store).keys == {}
    assert list_keys(store, "team-a")[0].describe()["state"] == "revoked"


def test_budgets_count_the_usage_of_their_project_or_key_this_period(store: Store, tmp_path: Path) -> None:
    create_project(store, "team-a")
    deploy(store, tmp_path, "chat", project="team-a")
    key, _ = create_key(store, "team-a", "ci")
    project_budget = budgets.set_budget(store, "team-a", "month", 1.0)
    key_budget = budgets.set_budget(store, "team-a", "day", 0.25, key=key.id)
    now = time.time()
    month_start, _ = budgets.period_bounds("month", now)
    records = [
        UsageRecord("a", "chat", key.id, now - 5, 10, 5, 200, 1.0, cost_usd=0.2, project="team-a"),
        UsageRecord("b", "chat", "primary", now - 5, 10, 5, 499, 1.0, is_stream=True, cost_usd=0.3, project="team-a"),
        UsageRecord("c", "chat", key.id, month_start - 10, 10, 5, 200, 1.0, cost_usd=5.0, project="team-a"),
        UsageRecord("d", "x", key.id, now - 5, 10, 5, 200, 1.0, cost_usd=9.0, project="team-b"),
    ]
    record_all(store.engine, records)
    assert budgets.spent(store, project_budget) == pytest.approx(0.5)  # a cut stream counts what it generated
    assert budgets.spent(store, key_budget) == pytest.approx(0.2)
    guard = budgets.BudgetGuard(store, cache_s=0)
    assert guard._check("team-a", key.id) is None
    budgets.set_budget(store, "team-a", "day", 0.2, key="ci")
    exhausted = guard._check("team-a", key.id)
    assert exhausted is not None and "daily budget of key" in exhausted.message()
    assert guard._check("team-a", "primary") is None  # another key of the project is not stopped by it
    rows = report(store.engine, store_pricing(store, "team-a"), project="team-a")
    assert [r.deployment for r in rows] == ["chat", "total"] and rows[-1].requests == 3


def test_the_audit_log_keeps_named_fields_only(store: Store) -> None:
    entry = audit.AuditEntry("key-1", "admin", "deployment.key.regenerate", 200, "ok", "chat", "default",
                             {"keyType": "primary", "keyValue": "0123456789abcdef0123456789abcdef",
                              "upstream_key": "sk-live", "prompt": "secret text"})  # fmt: skip
    audit.record(store, entry)
    (found,) = audit.query(store, action="deployment")
    assert found.details == {"keyType": "primary", "keyValue": "set", "upstream_key": "set"}
    assert audit.query(store, project="other") == [] and audit.query(store, actor="key-1") == [found]
