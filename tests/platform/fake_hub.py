"""A Hugging Face hub on loopback, for download tests: what `platform.hub` uses of the real one, served for real
over HTTP (a test process or a `serve` subprocess reaches it through `HF_ENDPOINT`).

- `GET /<repo>/resolve/main/<path>`: a 302 to the blob, carrying `X-Linked-Etag: "<sha256>"` as the hub does for LFS
  files;
- `GET /blob/<repo>/<path>`: the bytes, honouring `Range: bytes=N-` with a 206 (unless `ignores_ranges`), and
  cutting the connection after `drop_after` bytes once when asked (an interrupted download), and pausing every
  response at byte `hold_at` of the file until `release()` or `hold(next)` (a download in progress, to watch);
- `GET /api/models/<repo>/tree/main/<folder>`: the folder's files with `size` and `lfs.oid`, and its folders.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeHub:
    files: dict[str, bytes] = field(default_factory=dict)  # "<repo>/<path>" -> bytes
    advertised: dict[str, str | None] = field(default_factory=dict)  # override the X-Linked-Etag of a file
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    drop_after: int | None = None  # cut the next blob response after this many bytes
    ignores_ranges: bool = False
    hold_at: int | None = None  # blob responses pause when they reach this offset of the file
    paused: threading.Event = field(default_factory=threading.Event)  # set while a response is paused
    _go_on: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def hold(self, offset: int | None) -> None:
        """Pause responses at `offset` from now on (None: not at all); a paused response goes on to it."""
        self.hold_at = offset
        self._go_on.set()

    def release(self) -> None:
        self.hold(None)

    def wait_paused(self, timeout_s: float = 60) -> None:
        assert self.paused.wait(timeout_s), "no download reached the hub's hold point"

    def add(self, repo: str, path: str, payload: bytes) -> None:
        self.files[f"{repo}/{path}"] = payload

    def sha256(self, repo: str, path: str) -> str:
        return hashlib.sha256(self.files[f"{repo}/{path}"]).hexdigest()

    def etag(self, key: str) -> str | None:
        if key in self.advertised:
            return self.advertised[key]
        return hashlib.sha256(self.files[key]).hexdigest()

    def blob_requests(self) -> list[str | None]:
        """The Range header of every blob request, in order (None: the whole file)."""
        return [rng for path, rng in self.requests if path.startswith("/blob/")]


@contextmanager
def running_hub() -> Iterator[FakeHub]:
    state = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.daemon_threads = True  # a response paused for a client that went away must not hold the shutdown
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release()
        server.shutdown()
        server.server_close()


def _handler(state: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append((self.path, self.headers.get("Range")))
            if "/resolve/main/" in self.path:
                self._redirect(self.path.replace("/resolve/main/", "/", 1).lstrip("/"))
            elif self.path.startswith("/blob/"):
                self._blob(self.path[len("/blob/") :])
            elif self.path.startswith("/api/models/") and "/tree/main" in self.path:
                self._tree(self.path[len("/api/models/") :])
            else:
                self._send(404, b"")

        def _redirect(self, key: str) -> None:
            if key not in state.files:
                self._send(404, b"Entry not found")
                return
            self.send_response(302)
            self.send_header("Location", f"/blob/{key}")
            etag = state.etag(key)
            if etag:
                self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _blob(self, key: str) -> None:
            payload = state.files.get(key)
            if payload is None:
                self._send(404, b"")
                return
            start = _range_start(self.headers.get("Range"))
            if start is not None and not state.ignores_ranges:
                if start >= len(payload):
                    self._send(416, b"")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                body = payload[start:]
            else:
                self.send_response(200)
                body = payload
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.drop_after is not None:
                cut, state.drop_after = state.drop_after, None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the peer sees the body end short: a dropped download
                return
            try:
                self._write_holding(body, len(payload) - len(body))
            except OSError:  # the client went away (a cancelled download, a stopped server)
                self.close_connection = True

        def _write_holding(self, body: bytes, offset: int) -> None:
            """Write `body` (which starts at `offset` of the file), pausing at `state.hold_at`."""
            sent = 0
            while sent < len(body):
                hold = state.hold_at
                if hold is not None and offset + sent >= hold:
                    state._go_on.clear()
                    state.paused.set()
                    state._go_on.wait(120)
                    state.paused.clear()
                    continue
                end = len(body) if hold is None or hold <= offset else min(len(body), hold - offset)
                end = min(end, sent + 64 * 1024)
                self.wfile.write(body[sent:end])
                self.wfile.flush()
                sent = end

        def _tree(self, rest: str) -> None:
            repo_part, _, folder = rest.partition("/tree/main")
            folder = folder.strip("/")
            entries, folders = [], set()
            for key, payload in sorted(state.files.items()):
                if not key.startswith(repo_part + "/"):
                    continue
                path = key[len(repo_part) + 1 :]
                parent = path.rsplit("/", 1)[0] if "/" in path else ""
                if parent == folder:
                    entries.append({"type": "file", "path": path, "size": len(payload),
                                    "lfs": {"oid": state.etag(key), "size": len(payload)}})  # fmt: skip
                elif parent.startswith(prefix := folder + "/" if folder else ""):  # a folder inside `folder`
                    child = prefix + parent[len(prefix) :].split("/", 1)[0]
                    if child not in folders:
                        folders.add(child)
                        entries.append({"type": "directory", "path": child})
            self._send(200, json.dumps(entries).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _range_start(header: str | None) -> int | None:
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    return int(header[len("bytes=") : -1])
