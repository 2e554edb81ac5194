"""Download jobs (`platform.downloads`) on a real SQLite store and the fake hub: the lease that lets one of several
servers on a data directory download a job, the take-over of a dead server's job, and failures with their reason."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamafoundry.platform.deployments import DeploymentSpec, create_deployment
from llamafoundry.platform.downloads import LEASE_S, DownloadWorker, get_job, resume, status
from llamafoundry.platform.store import Store
from tests.api.deployment_fixtures import wait_for
from tests.platform.fake_hub import FakeHub, running_hub

REPO, FILE = "bartowski/Llama-3.2-1B-GGUF", "Llama-3.2-1B-Q4_K_M.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path) -> Iterator[FakeHub]:
    with running_hub() as state:
        state.add(REPO, FILE, tiny_model_path.read_bytes())
        monkeypatch.setenv("HF_ENDPOINT", state.url)
        yield state


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path)
    yield opened
    opened.close()


def _finish(worker: DownloadWorker, store: Store, name: str) -> None:
    wait_for(lambda: worker.tick() is None and get_job(store, name) is None, 60, "the download finishing")


def test_one_server_downloads_a_job_and_takes_over_a_dead_servers_job(
    hub: FakeHub, store: Store, tmp_path: Path
) -> None:
    size = len(hub.files[f"{REPO}/{FILE}"])
    hub.hold(size // 2)
    created, _ = create_deployment(store, DeploymentSpec("dl-job", "Llama-3.2-1B", type="managed"), tmp_path)
    assert created.weights_path is None and get_job(store, "dl-job") is not None
    first, second = (DownloadWorker(store, tmp_path / "models", f"server {n}") for n in ("a", "b"))
    first.tick()
    second.tick()  # the same store (a shared data directory): the job is taken already
    assert list(first.running) == ["dl-job"] and second.running == {}
    hub.wait_paused()
    assert status(get_job(store, "dl-job"))["downloading_on"] == "server a"  # type: ignore[arg-type]

    dead = first.running["dl-job"]
    wait_for(lambda: dead.done == size // 2, 30, "server a receiving the bytes up to the hub's hold")
    dead.cancel.set()  # server a dies: it writes nothing more and never renews its lease
    hub.release()
    assert dead.thread is not None
    dead.thread.join(10)
    second.tick(now=time.time() + 1)
    assert second.running == {}  # the lease still holds
    second.tick(now=time.time() + LEASE_S + 1)
    assert list(second.running) == ["dl-job"]
    _finish(second, store, "dl-job")
    assert hub.blob_requests() == [None, f"bytes={size // 2}-"]  # taken over from the dead server's bytes
    found = store.get_deployment("dl-job")
    assert found is not None and found.weights_path == str(tmp_path / "models" / REPO / FILE)


def test_a_corrupt_download_fails_with_its_reason_and_resumes_on_request(
    hub: FakeHub, store: Store, tmp_path: Path
) -> None:
    key = f"{REPO}/{FILE}"
    hub.advertised[key] = hashlib.sha256(b"another file").hexdigest()
    create_deployment(store, DeploymentSpec("dl-job", "Llama-3.2-1B", type="managed"), tmp_path)
    worker = DownloadWorker(store, tmp_path / "models")
    wait_for(lambda: worker.tick() is None and get_job(store, "dl-job").state == "failed", 60, "the failure")  # type: ignore[union-attr]
    failed = status(get_job(store, "dl-job"))  # type: ignore[arg-type]
    assert "is corrupt" in failed["error"] and "downloading_on" not in failed
    assert store.get_deployment("dl-job").weights_path is None  # type: ignore[union-attr]

    del hub.advertised[key]  # the hub serves the right file now
    assert resume(store, "dl-job").state == "downloading"
    _finish(worker, store, "dl-job")
    assert store.get_deployment("dl-job").weights_path is not None  # type: ignore[union-attr]


def test_weights_already_downloaded_make_no_job(hub: FakeHub, store: Store, tmp_path: Path) -> None:
    create_deployment(store, DeploymentSpec("first", "Llama-3.2-1B", type="managed"), tmp_path)
    _finish(DownloadWorker(store, tmp_path / "models"), store, "first")
    again, _ = create_deployment(store, DeploymentSpec("second", "Llama-3.2-1B", type="managed"), tmp_path)
    assert again.weights_path is not None and get_job(store, "second") is None and len(hub.blob_requests()) == 1
