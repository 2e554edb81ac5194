"""The store against both databases it supports: SQLite (a file in the data directory) and a real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from llamafoundry.platform.database import SQLITE_FILE, database_url, latest_schema_revision
from llamafoundry.platform.keys import hash_key
from llamafoundry.platform.store import Deployment, Store, StoreConflict
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


def deployment(name: str, type_: str = "serverless", model: str = MODEL, **extra: object) -> Deployment:
    return Deployment(name=name, model=model, type=type_, instances=1, created_at=1000.0, weights_path="/w.gguf",
                      **extra)  # type: ignore[arg-type]  # fmt: skip


def test_a_new_store_is_migrated_to_the_latest_schema(store: Store) -> None:
    assert store.schema_revision() == latest_schema_revision()
    assert store.list_deployments() == []
    assert store.admin_key() is None


def test_deployments_and_keys_round_trip(store: Store) -> None:
    store.add_deployment(deployment("chat", settings={"tokens_per_minute": 10}), {"primary": "h1", "secondary": "h2"})
    found = store.get_deployment("chat")
    assert found == deployment("chat", settings={"tokens_per_minute": 10})
    assert [(k.slot, k.key_hash) for k in store.keys("chat")] == [("primary", "h1"), ("secondary", "h2")]
    snapshot = store.snapshot()
    assert list(snapshot.deployments) == ["chat"] and len(snapshot.keys["chat"]) == 2


def test_every_write_bumps_the_revision(store: Store) -> None:
    seen = [store.revision()]
    store.add_deployment(deployment("chat"), {"primary": "h1"})
    seen.append(store.revision())
    store.set_key("chat", "primary", "h9")
    seen.append(store.revision())
    store.update_settings("chat", {"content_safety": False})
    seen.append(store.revision())
    store.delete_deployment("chat")
    seen.append(store.revision())
    assert seen == sorted(set(seen)), "each write must change the revision a server polls"


def test_one_serverless_deployment_per_model_is_enforced_by_the_database(store: Store) -> None:
    store.add_deployment(deployment("first"), {})
    with pytest.raises(StoreConflict):
        store.add_deployment(deployment("second"), {})
    store.add_deployment(deployment("managed-one", "managed"), {})  # managed compute has no such limit
    store.add_deployment(deployment("managed-two", "managed"), {})
    assert store.find_serverless(MODEL).name == "first"  # type: ignore[union-attr]


def test_names_are_unique(store: Store) -> None:
    store.add_deployment(deployment("chat", "managed"), {})
    with pytest.raises(StoreConflict):
        store.add_deployment(deployment("chat", "managed", model="Llama-3.2-1B"), {})


def test_regenerating_one_key_keeps_the_other(store: Store) -> None:
    store.add_deployment(deployment("chat"), {"primary": "p1", "secondary": "s1"})
    store.set_key("chat", "secondary", "s2", now=2000.0)
    keys = {k.slot: k for k in store.keys("chat")}
    assert keys["primary"].key_hash == "p1" and keys["secondary"].key_hash == "s2"
    assert keys["secondary"].created_at == 2000.0


def test_deleting_a_deployment_deletes_its_keys(store: Store) -> None:
    store.add_deployment(deployment("chat"), {"primary": "p1"})
    assert store.delete_deployment("chat")
    assert store.keys("chat") == [] and store.get_deployment("chat") is None
    assert not store.delete_deployment("chat")


def test_expired_deployments_are_deleted(store: Store) -> None:
    store.add_deployment(deployment("old", "managed", expires_at=1500.0, shared_quota=True), {"primary": "p"})
    store.add_deployment(deployment("young", "managed", model="Llama-3.2-1B", expires_at=9000.0), {})
    revision = store.revision()
    assert store.delete_expired(now=1000.0) == [] and store.revision() == revision  # no write when nothing expired
    assert store.delete_expired(now=2000.0) == ["old"]
    assert [d.name for d in store.list_deployments()] == ["young"]


def test_settings_merge_and_remove(store: Store) -> None:
    store.add_deployment(deployment("chat"), {})
    store.update_settings("chat", {"a": 1, "b": 2})
    assert store.update_settings("chat", {"b": None, "c": [1]}).settings == {"a": 1, "c": [1]}


def test_admin_key_is_replaced(store: Store) -> None:
    store.set_admin_key(hash_key("k1"))
    store.set_admin_key(hash_key("k2"))
    assert store.admin_key().key_hash == hash_key("k2")  # type: ignore[union-attr]


def test_reopening_keeps_the_data_and_does_not_migrate_again(store_url: str) -> None:
    first = Store(store_url)
    first.add_deployment(deployment("chat"), {"primary": "p1"})
    first.close()
    second = Store(store_url)
    assert second.get_deployment("chat") is not None and second.schema_revision() == latest_schema_revision()
    second.close()


def test_concurrent_openers_and_writers_do_not_fail(store_url: str) -> None:
    """Servers and `deploy` commands open and write the store at the same time."""
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            opened = Store(store_url)
            opened.add_deployment(deployment(f"managed-{index}", "managed"), {"primary": f"h{index}"})
            opened.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check = Store(store_url)
    assert len(check.list_deployments()) == 6
    check.close()


def test_processes_opening_a_new_sqlite_store_at_the_same_instant_all_get_in(tmp_path: Path) -> None:
    """Switching a new database to WAL needs the file to itself, and SQLite answers "database is locked" at once
    (no busy wait) while another connection is switching: a server and `deploy` commands started together
    failed that way (about 1 in 60 runs of the test above under load)."""
    for trial in range(15):
        home = tmp_path / str(trial)
        home.mkdir()
        url = database_url(home)
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def open_and_read(url: str = url, start: threading.Barrier = start, errors: list = errors) -> None:
            try:
                start.wait()
                opened = Store(url)
                opened.list_deployments()
                opened.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"trial {trial}: {errors[0]!r}"


def test_upgrading_an_old_schema_keeps_its_rows(store_url: str) -> None:
    """A database at revision 0001 (before settings and admin keys) is migrated, not re-created."""
    from alembic import command
    from alembic.config import Config

    from llamafoundry.platform.database import MIGRATIONS_DIR, create_engine

    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            sa.text(
                "INSERT INTO deployments (name, model, type, weights_path, instances, shared_quota, created_at) "
                "VALUES ('legacy', :model, 'serverless', '/w.gguf', 1, false, 5.0)"
            ),
            {"model": MODEL},
        )
    engine.dispose()
    upgraded = Store(store_url)
    legacy = upgraded.get_deployment("legacy")
    assert legacy is not None and legacy.settings == {} and legacy.created_at == 5.0
    assert upgraded.schema_revision() == latest_schema_revision()
    upgraded.close()


def test_the_sqlite_file_lives_in_the_data_directory(tmp_path: Path) -> None:
    opened = Store.open(tmp_path / "home")
    opened.close()
    assert (tmp_path / "home" / SQLITE_FILE).is_file()


def test_postgres_urls_use_psycopg_3(tmp_path: Path) -> None:
    assert database_url(tmp_path, "postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url(tmp_path, "postgres://u@h/db") == "postgresql+psycopg://u@h/db"


def test_runtime_reports_replace_a_servers_rows_and_do_not_bump_the_revision(store: Store) -> None:
    """What `deploy show` reads: each serving process's last word on each deployment it serves."""
    revision = store.revision()
    store.report_runtime("host-a pid 1", {"chat": {"state": "ready"}, "fleet": {"state": "starting"}}, now=10.0)
    store.report_runtime("host-b pid 2", {"chat": {"state": "failed", "error": "x"}}, now=20.0)
    assert [(r.server, r.status["state"]) for r in store.runtime("chat")] == [
        ("host-b pid 2", "failed"),  # newest first
        ("host-a pid 1", "ready"),
    ]
    store.report_runtime("host-a pid 1", {"chat": {"state": "ready", "replicas": [{"restarts": 1}]}}, now=30.0)
    assert store.runtime("fleet") == []  # host-a no longer serves it
    newest = store.runtime("chat")[0]
    assert newest.status["replicas"] == [{"restarts": 1}] and newest.updated_at == 30
    store.report_runtime("host-a pid 1", {})  # a server stopping
    assert [r.server for r in store.runtime("chat")] == ["host-b pid 2"]
    assert store.revision() == revision  # runtime state is no configuration: servers do not reload on it
