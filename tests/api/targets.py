"""Parity targets: the same end-to-end suites run against every way a model is served (issue 17, point 2).

`target` is a session-scoped fixture parametrised over `TARGETS`; each entry names the fixture that gives its
`Target` (endpoint URL, key, the model name answers carry, the OpenAI-style base and `model`, and the processes
that serve it). The servers are started once per session and shared by every suite:

- `bare`: the session's `server` (`tests/api/conftest.py`), called at its bare route with the server's key;
- `local`: deployment `local` of the parity gateway, one local replica of the same GGUF, at `/deployments/local`
  with the deployment's key (serverless: content safety on, as on the bare route);
- `upstream`: deployment `upstream` of the same gateway, forwarding (`--upstream`) to a second `llamafoundry
  serve` process of the same GGUF (serverless on another catalog model, since a model has one serverless
  deployment; that server's own content safety is off, so the deployment's policy is what is tested).

Each also has a one-slot form (`one_slot_target`: one slot, minutes of context, a short queue) for the cases of
disconnects and back-pressure.

A case that cannot hold on some target is named in `KNOWN_GAPS` with the reason; it then runs as a strict xfail.

A further target is one entry in `TARGETS` naming the session fixture that returns its `Target` (and, for the
back-pressure cases, its one-slot form), usually through `deployment_target`: a deployment added to the running
parity gateway, as `upstream` is, e.g. `deployment_target(parity_gateway, "llama_server", "llama-server",
"Llama-3.3-70B-Instruct", "--upstream", url)` (another catalog model: a model has one serverless deployment).
The fixture module is imported by `tests/api/conftest.py`, as this one is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.api.conftest import Server, start_server, stop_server
from tests.api.deployment_fixtures import Gateway, cli_json, start_gateway, wait_ready


@dataclass(frozen=True)
class TargetFixtures:
    """The names of the session fixtures that give one target's `Target`s."""

    sized: str  # sized as the session's bare `server`: 4 slots, 1024-token context
    one_slot: str | None = None  # one slot, as much context as it can have, the shortest queue it can have


# parameter id -> its fixtures
TARGETS: dict[str, TargetFixtures] = {
    "bare": TargetFixtures("bare_target", "one_slot_bare_target"),
    "local": TargetFixtures("local_target", "one_slot_local_target"),
    "upstream": TargetFixtures("upstream_target", "one_slot_upstream_target"),
}
# (test function, target id) -> why that feature cannot hold on that target: the case runs as xfail(strict=True),
# so it fails the suite the day the feature starts to hold there (`mark_known_gaps`, called by conftest).
KNOWN_GAPS: dict[tuple[str, str], str] = {}
SIZES = ("--ctx-size", "1024", "--parallel", "4", "--threads", "1")  # what the session's bare `server` runs with
ONE_SLOT = ("--parallel", "1", "--threads", "1")
ONE_SLOT_CTX = 32768  # minutes of generation fit in it
TRAINED_CTX = 8192  # the tiny model's: the most a deployment's replica may be sized to (serve itself takes more)
LOCAL_MODEL = "Meta-Llama-3.1-8B-Instruct"
UPSTREAM_MODEL = "Meta-Llama-3.1-70B-Instruct"


@dataclass
class Target:
    """One way of serving the tiny model, as the suites call it."""

    id: str
    url: str  # the Azure AI Inference endpoint: what the SDKs are given
    key: str
    name: str  # the `model` answers carry (and `/info`'s model_name)
    openai_url: str  # `OpenAI(base_url=...)`
    openai_model: str  # what OpenAI-style clients send as `model` (what `GET /v1/models` lists for the key)
    home: Path  # the data directory of the server that meters it (`/management/usage`)
    pids: list[int] = field(default_factory=list)  # the processes serving it (their children count too)
    ctx_size: int = 1024  # the context of the engine that answers
    max_queue: int = 64  # the requests it queues when its slots are busy (serve's default)


@pytest.fixture(scope="session", params=list(TARGETS))
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(TARGETS[request.param].sized)  # type: ignore[no-any-return]


@pytest.fixture(scope="session", params=list(TARGETS))
def one_slot_target(request: pytest.FixtureRequest) -> Target:
    fixture = TARGETS[request.param].one_slot
    if fixture is None:
        pytest.skip(f"target {request.param} has no one-slot form (TargetFixtures.one_slot)")
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def bare_target(server: Server, private_data_dir: Path) -> Target:
    return Target("bare", server.url, server.key, server.name, f"{server.url}/v1", server.name, private_data_dir,
                  [server.process.pid])  # fmt: skip


@pytest.fixture(scope="session")
def parity_gateway(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A `serve` process over its own data directory: the deployments of the parity targets are added to it."""
    gateway = start_gateway(tmp_path_factory.mktemp("parity-home"), tiny_model_path)
    yield gateway
    gateway.stop()


def deployment_target(gateway: Gateway, target_id: str, name: str, model: str, *create_args: str) -> Target:
    """`deploy create NAME --model MODEL CREATE_ARGS` in the gateway's data directory (the running gateway picks
    it up); the Target once it answers 200. Its answers carry the catalog name MODEL; OpenAI-style clients send
    the deployment's name as `model`."""
    created = cli_json(gateway.home, "deploy", "create", name, "--model", model, *create_args)
    url = f"{gateway.url}/deployments/{name}"
    wait_ready(f"{url}/chat/completions", created["primary_key"])
    return Target(target_id, url, created["primary_key"], model, f"{gateway.url}/v1", name, gateway.home,
                  [gateway.process.pid])  # fmt: skip


@pytest.fixture(scope="session")
def local_target(parity_gateway: Gateway, tiny_model_path: Path) -> Target:
    return deployment_target(parity_gateway, "local", "local", LOCAL_MODEL, "--weights", str(tiny_model_path), *SIZES)


@pytest.fixture(scope="session")
def upstream_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second `serve` process of the same GGUF: what the `upstream` deployment forwards to."""
    running = start_server(tiny_model_path, tmp_path_factory.mktemp("upstream"), *SIZES, "--content-safety", "off")
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def upstream_target(parity_gateway: Gateway, upstream_server: Server) -> Target:
    forward = ["--upstream", f"{upstream_server.url}/v1", "--upstream-model", upstream_server.name,
               "--upstream-key", upstream_server.key]  # fmt: skip
    found = deployment_target(parity_gateway, "upstream", "upstream", UPSTREAM_MODEL, *forward)
    found.pids.append(upstream_server.process.pid)
    return found


_ADMIN_KEYS: dict[Path, str] = {}


def admin_key(target: Target) -> str:
    """An admin key of the data directory that meters `target` (made once per directory in a session: making one
    ends the one before)."""
    if target.home not in _ADMIN_KEYS:
        _ADMIN_KEYS[target.home] = str(cli_json(target.home, "deploy", "admin-key", "--regenerate")["admin_key"])
    return _ADMIN_KEYS[target.home]


# ---- one slot, one queue place: disconnects and back-pressure -------------------------------------------------


def one_slot_server(model: Path, log_dir: Path, *extra: str) -> Server:
    return start_server(model, log_dir, *ONE_SLOT, "--ctx-size", str(ONE_SLOT_CTX), "--max-queue", "1", *extra)


@pytest.fixture(scope="session")
def one_slot_bare_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = one_slot_server(tiny_model_path, tmp_path_factory.mktemp("one-slot"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def one_slot_bare_target(one_slot_bare_server: Server, private_data_dir: Path) -> Target:
    running = one_slot_bare_server
    return Target("bare", running.url, running.key, running.name, f"{running.url}/v1", running.name,
                  private_data_dir, [running.process.pid], ONE_SLOT_CTX, max_queue=1)  # fmt: skip


@pytest.fixture(scope="session")
def one_slot_local_target(parity_gateway: Gateway, tiny_model_path: Path) -> Target:
    # no --max-queue for a deployment: its replica queues serve's default (Target.max_queue)
    found = deployment_target(parity_gateway, "local", "local-1", LOCAL_MODEL, "--type", "managed",
                              "--weights", str(tiny_model_path), *ONE_SLOT, "--ctx-size", str(TRAINED_CTX))  # fmt: skip
    found.ctx_size = TRAINED_CTX
    return found


@pytest.fixture(scope="session")
def one_slot_upstream_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = one_slot_server(tiny_model_path, tmp_path_factory.mktemp("one-slot-upstream"), "--content-safety", "off")
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def one_slot_upstream_target(parity_gateway: Gateway, one_slot_upstream_server: Server) -> Target:
    running = one_slot_upstream_server
    forward = ["--upstream", f"{running.url}/v1", "--upstream-model", running.name, "--upstream-key", running.key]
    found = deployment_target(parity_gateway, "upstream", "upstream-1", UPSTREAM_MODEL, "--type", "managed", *forward)
    found.pids.append(running.process.pid)
    found.ctx_size, found.max_queue = ONE_SLOT_CTX, 1
    return found


def mark_known_gaps(items: list[pytest.Item]) -> None:
    """xfail(strict=True, reason) on each case that `KNOWN_GAPS` names for its target."""
    for item in items:
        params = getattr(item, "callspec", None)
        target_id = params and (params.params.get("target") or params.params.get("one_slot_target"))
        reason = KNOWN_GAPS.get((getattr(item, "originalname", item.name), str(target_id)))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
