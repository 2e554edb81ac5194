"""Deployment rules and the `deploy` commands, on the store directly (no server)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamafoundry.cli import main
from llamafoundry.platform.deployments import (
    SHARED_QUOTA_LIFETIME_S,
    DeploymentConflict,
    DeploymentError,
    DeploymentNotFound,
    DeploymentSpec,
    create_deployment,
    list_deployments,
    regenerate_admin_key,
    regenerate_key,
)
from llamafoundry.platform.keys import hash_key, match_key
from llamafoundry.platform.server_keys import STALE_S, check_own_key, forget_server_key, record_server_key
from llamafoundry.platform.store import Store
from tests.gguf_files import metadata_only_gguf
from tests.platform.postgres_server import fresh_database, running_postgres

MODEL = "Meta-Llama-3.1-8B-Instruct"


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return metadata_only_gguf(tmp_path / "model.gguf")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "home")
    yield opened
    opened.close()


def create(store: Store, tmp_path: Path, **fields: Any) -> Any:
    return create_deployment(store, DeploymentSpec(**fields), tmp_path / "home")


def test_create_stores_the_deployment_and_two_hashed_keys(store: Store, tmp_path: Path, weights: Path) -> None:
    deployment, keys = create(store, tmp_path, name="Chat-One", model="meta-llama-3.1-8b-instruct", weights=weights)
    assert deployment.name == "chat-one" and deployment.model == MODEL and deployment.type == "serverless"
    assert len(keys.primary) == 32 and len(keys.secondary) == 32 and keys.primary != keys.secondary
    stored = store.keys("chat-one")
    assert {k.key_hash for k in stored} == {hash_key(keys.primary), hash_key(keys.secondary)}
    assert keys.primary not in json.dumps([k.__dict__ for k in stored])


def test_second_serverless_deployment_of_a_model_is_a_409_naming_the_holder(
    store: Store, tmp_path: Path, weights: Path
) -> None:
    create(store, tmp_path, name="first", model=MODEL, weights=weights)
    with pytest.raises(DeploymentConflict, match="Deployment 'first' already holds the serverless deployment") as e:
        create(store, tmp_path, name="second", model=MODEL, weights=weights)
    assert e.value.status == 409
    create(store, tmp_path, name="managed-copy", model=MODEL, type="managed", weights=weights)  # managed is fine


def test_names_are_unique_and_well_formed(store: Store, tmp_path: Path, weights: Path) -> None:
    create(store, tmp_path, name="chat", model=MODEL, type="managed", weights=weights)
    with pytest.raises(DeploymentConflict, match="already exists"):
        create(store, tmp_path, name="CHAT", model="Llama-3.2-1B", type="managed", weights=weights)
    for bad in ("a", "-chat", "chat-", "my_chat", "chat/x", "x" * 33, "c--d"):
        with pytest.raises(DeploymentError, match="not a valid deployment name"):
            create(store, tmp_path, name=bad, model=MODEL, weights=weights)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "Llama-Guard-3-1B"}, "cannot be deployed as serverless; it allows managed"),
        ({"model": MODEL, "instances": 2}, "--instances applies to managed compute only"),
        ({"model": MODEL, "shared_quota": True}, "--shared-quota applies to managed compute only"),
        ({"model": MODEL, "instance_type": "Standard_D4as_v4"}, "--instance-type applies to managed"),
        ({"model": MODEL, "type": "managed", "instances": 0}, "between 1 and 16"),
        ({"model": MODEL, "type": "managed", "instance_type": "huge"}, "Instance type 'huge' is not known"),
        ({"model": MODEL, "type": "spot"}, "does not exist: use serverless or managed"),
        ({"model": "gpt-4"}, "not in the catalog"),
        ({"model": MODEL, "upstream_url": "ftp://x"}, "not an http"),
        ({"model": "Llama-3.2-90B-Vision-Instruct"}, "deploy it with --upstream URL"),
    ],
)
def test_invalid_specs_say_what_to_do(store: Store, tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(DeploymentError, match=message) as e:
        create(store, tmp_path, name="chat", **fields)
    assert e.value.status == 400


def test_weights_and_upstream_are_exclusive(store: Store, tmp_path: Path, weights: Path) -> None:
    with pytest.raises(DeploymentError, match="either --weights or --upstream"):
        create(store, tmp_path, name="chat", model=MODEL, weights=weights, upstream_url="http://h:1/v1")


def test_shared_quota_deployments_expire_after_168_hours(store: Store, tmp_path: Path, weights: Path) -> None:
    now = time.time()
    deployment, _ = create_deployment(
        store,
        DeploymentSpec(name="shared", model="Llama-3.2-1B", type="managed", weights=weights, shared_quota=True),
        tmp_path / "home",
        now=now,
    )
    assert deployment.expires_at == now + SHARED_QUOTA_LIFETIME_S == now + 168 * 3600
    assert [d.name for d in list_deployments(store, now=now + 167 * 3600)] == ["shared"]
    assert list_deployments(store, now=now + 168 * 3600 + 1) == []
    assert store.keys("shared") == []


def test_regenerating_one_key_stops_it_at_once_and_keeps_the_other(store: Store, tmp_path: Path, weights: Path) -> None:
    _, keys = create(store, tmp_path, name="chat", model=MODEL, weights=weights)
    new_primary = regenerate_key(store, "chat", "primary")
    stored = store.keys("chat")
    assert match_key([keys.primary], stored) is None
    assert match_key([keys.secondary], stored) is not None and match_key([new_primary], stored) is not None
    imported = "A1" * 16
    assert regenerate_key(store, "chat", "secondary", imported) == imported
    with pytest.raises(DeploymentError, match="32 characters"):
        regenerate_key(store, "chat", "secondary", "short")
    with pytest.raises(DeploymentNotFound):
        regenerate_key(store, "nope", "primary")


def test_an_imported_key_that_is_already_in_use_is_refused(store: Store, tmp_path: Path, weights: Path) -> None:
    """Both slots holding one key cannot be rotated one at a time, and one key on two deployments opens both."""
    _, chat = create(store, tmp_path, name="chat", model=MODEL, weights=weights)
    _, other = create(store, tmp_path, name="other", model="Meta-Llama-3.1-70B-Instruct", weights=weights)
    with pytest.raises(DeploymentError, match=r"already in use \(deployment chat \(primary\)\)"):
        regenerate_key(store, "chat", "secondary", chat.primary)
    with pytest.raises(DeploymentError, match="already in use"):
        regenerate_key(store, "other", "primary", chat.secondary)
    admin = regenerate_admin_key(store)
    with pytest.raises(DeploymentError, match=r"already in use \(the admin key\)"):
        regenerate_key(store, "other", "secondary", admin)
    assert regenerate_key(store, "chat", "primary", chat.primary) == chat.primary  # the slot's own key again
    assert match_key([other.primary], store.keys("other")) is not None  # nothing was changed by the refusals


def test_a_key_a_running_server_uses_as_its_own_is_refused_until_it_stops(
    store: Store, tmp_path: Path, weights: Path
) -> None:
    create(store, tmp_path, name="chat", model=MODEL, weights=weights)
    own = "B2" * 16
    record_server_key(store, "host pid 1", hash_key(own))
    with pytest.raises(DeploymentConflict, match=r"already in use \(the --api-key of the server host pid 1\)"):
        regenerate_key(store, "chat", "primary", own)
    forget_server_key(store, "host pid 1")  # it stopped
    assert regenerate_key(store, "chat", "primary", own) == own
    # a server killed without a word: its row counts until it is STALE_S old (a restart then checks at start-up)
    record_server_key(store, "host pid 2", hash_key("C3" * 16), now=time.time() - STALE_S - 1)
    assert regenerate_key(store, "chat", "secondary", "C3" * 16) == "C3" * 16
    with pytest.raises(ValueError, match=r"--api-key is already in use \(deployment chat \(primary\)\)"):
        check_own_key(store, hash_key(own))


# ---- the commands ----------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_deploy_commands_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path, weights: Path) -> None:
    home = ["--data-dir", str(tmp_path)]
    code, out, _ = run(capsys, "deploy", "create", "chat", "--model", MODEL, "--weights", str(weights), "--json",
                       *home)  # fmt: skip
    created = json.loads(out)
    assert code == 0 and created["name"] == "chat" and len(created["primary_key"]) == 32

    code, out, err = run(capsys, "deploy", "create", "again", "--model", MODEL, "--weights", str(weights), *home)
    assert code == 1 and "Deployment 'chat' already holds the serverless deployment" in err

    code, out, err = run(capsys, "deploy", "create", "fleet", "--model", "Llama-3.2-1B-Instruct", "--type", "managed",
                         "--weights", str(weights), "--instances", "2", "--shared-quota", *home)  # fmt: skip
    assert code == 0 and "fleet" in out and "primary_key" in out

    code, out, _ = run(capsys, "deploy", "list", *home)
    assert code == 0 and "chat" in out and "fleet" in out and "Llama-3.2-1B-Instruct" in out
    listed = json.loads(run(capsys, "deploy", "list", "--json", *home)[1])
    assert [d["name"] for d in listed] == ["chat", "fleet"]

    code, out, err = run(capsys, "deploy", "show", "fleet", *home)
    assert code == 0 and "instances" in out and "deleted automatically at" in err
    assert re.search(r"\(in 16[78]\.\d hours\)", err)
    shown = json.loads(run(capsys, "deploy", "show", "fleet", "--json", *home)[1])
    assert shown["instances"] == 2 and shown["shared_quota"] is True and shown["expires_in_hours"] > 167
    assert "primary_key" not in shown and set(shown["keys"]) == {"primary", "secondary"}

    code, out, err = run(capsys, "deploy", "keys", "chat", *home)
    assert code == 0 and created["primary_key"] not in out and "stored hashed" in err
    code, out, err = run(capsys, "deploy", "keys", "chat", "--regenerate", "secondary", "--json", *home)
    new_secondary = json.loads(out)["secondary_key"]
    assert code == 0 and len(new_secondary) == 32 and new_secondary != created["secondary_key"]

    code, _, err = run(capsys, "deploy", "delete", "chat", *home)
    assert code == 0 and "Deleted deployment chat" in err
    code, _, err = run(capsys, "deploy", "show", "chat", *home)
    assert code == 1 and "Deployment 'chat' not found" in err
    code, _, err = run(capsys, "deploy", "delete", "chat", *home)
    assert code == 1 and "nothing was deleted" in err


def test_admin_key_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    home = ["--data-dir", str(tmp_path)]
    code, _, err = run(capsys, "deploy", "admin-key", *home)
    assert code == 1 and "--regenerate" in err
    code, out, _ = run(capsys, "deploy", "admin-key", "--regenerate", "--json", *home)
    key = json.loads(out)["admin_key"]
    assert code == 0 and len(key) == 32
    code, out, _ = run(capsys, "deploy", "admin-key", *home)
    assert code == 0 and key not in out and "admin key key-" in out


def test_the_data_directory_comes_from_llamafoundry_home(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMAFOUNDRY_DATA_DIR")  # the suite's own (tests/conftest.py), which would win
    monkeypatch.setenv("LLAMAFOUNDRY_HOME", str(tmp_path / "env-home"))
    (tmp_path / "env-home").mkdir()
    assert run(capsys, "deploy", "create", "chat", "--model", MODEL, "--weights", str(weights))[0] == 0
    assert (tmp_path / "env-home" / "llamafoundry.db").is_file()


def test_deploy_commands_on_postgresql(capsys: pytest.CaptureFixture[str], tmp_path: Path, weights: Path) -> None:
    with running_postgres() as server:
        (tmp_path / "home").mkdir()
        url = ["--database-url", fresh_database(server), "--data-dir", str(tmp_path / "home")]
        assert run(capsys, "deploy", "create", "chat", "--model", MODEL, "--weights", str(weights), *url)[0] == 0
        code, _, err = run(capsys, "deploy", "create", "dup", "--model", MODEL, "--weights", str(weights), *url)
        assert code == 1 and "already holds" in err
        assert [d["name"] for d in json.loads(run(capsys, "deploy", "list", "--json", *url)[1])] == ["chat"]
        assert not (tmp_path / "home" / "llamafoundry.db").exists()
