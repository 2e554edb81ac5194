"""How long a local deployment's replica killed with SIGKILL is away, and where that time goes.

    python bench/replica_restart.py                       # the demo model, 1 replica, 3 streaming clients
    python bench/replica_restart.py --model tiny.gguf --instances 2 --streams 8 --kills 5

Starts `llamafoundry serve` on a scratch data directory with one managed deployment of `--model`, keeps
`--streams` loopback clients streaming to it (each retries at once after an error, as a client without backoff
would: the load a restart meets at its worst), and kills replica 0 `--kills` times. Per kill:

- back: from the kill until the management API shows replica 0 healthy with a new pid (polled every 20 ms);
- first 200: from the kill until a new request to the deployment answered 200 (with one replica, only the
  restarted one can answer);
- the gateway's own account (log): forked (exit noticed to process forked) and healthy (forked to /health 200),
  and the replica's model load (its log).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from llamafoundry.cli import main as cli_main

KEY = "0123456789abcdef0123456789abcdef"
GATEWAY_LINE = re.compile(r"serves again, ([\d.]+) s after it exited \(forked in ([\d.]+) s, healthy ([\d.]+) s later")
LOAD_LINE = re.compile(r"is ready \(loaded in ([\d.]+) s\)")


def cli(home: Path, *argv: str) -> dict[str, object]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main([*argv, "--json", "--data-dir", str(home)]) == 0
    return dict(json.loads(out.getvalue()))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, home: Path, model: Path, instances: int) -> None:
        created = cli(home, "deploy", "create", "bench", "--model", "Llama-3.2-1B-Instruct", "--type", "managed",
                      "--instances", str(instances), "--weights", str(model))  # fmt: skip
        self.key = str(created["primary_key"])
        self.admin = {"api-key": str(cli(home, "deploy", "admin-key", "--regenerate")["admin_key"])}
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/deployments/bench/chat/completions"
        self.log = home / "gateway.log"
        with self.log.open("wb") as log:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "llamafoundry", "serve", "--data-dir", str(home), "--no-default",
                 "--api-key", KEY, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.stop = threading.Event()
        self.home = home

    def ok(self, timeout: float = 30) -> bool:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        with contextlib.suppress(httpx.HTTPError):
            return httpx.post(self.url, json=body, headers={"api-key": self.key}, timeout=timeout).status_code == 200
        return False

    def replica0(self) -> dict[str, object]:
        answer = httpx.get(f"{self.base}/management/deployments/bench", headers=self.admin, timeout=10)
        return dict(answer.json()["status"]["replicas"][0])

    def stream_forever(self) -> None:
        body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 200, "stream": True}
        while not self.stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                with httpx.stream("POST", self.url, json=body, headers={"api-key": self.key}, timeout=30) as answer:
                    for _line in answer.iter_lines():
                        pass

    def kill_once(self) -> tuple[float, float]:
        """Kill replica 0; (seconds until it is healthy with a new pid, seconds until a request answers 200)."""
        before = self.replica0()
        killed = time.monotonic()
        os.kill(int(str(before["pid"])), signal.SIGKILL)
        first_200: list[float] = []

        def until_answered() -> None:
            while not self.ok(timeout=10):
                time.sleep(0.02)
            first_200.append(time.monotonic() - killed)

        answering = threading.Thread(target=until_answered)
        answering.start()
        while True:
            replica = self.replica0()
            if replica["healthy"] and replica["pid"] != before["pid"]:
                back = time.monotonic() - killed
                break
            time.sleep(0.02)
        answering.join()
        return back, first_200[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default_model = Path(__file__).resolve().parents[1] / "src/llamafoundry/model/data/llamafoundry-demo.gguf"
    parser.add_argument("--model", type=Path, default=default_model)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--streams", type=int, default=3, help="clients streaming meanwhile (fewer than its 4 slots)")
    parser.add_argument("--kills", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        bench = Bench(Path(scratch), args.model.resolve(), args.instances)
        try:
            deadline = time.monotonic() + 300
            while not bench.ok() and time.monotonic() < deadline:
                time.sleep(0.2)
            clients = [threading.Thread(target=bench.stream_forever) for _ in range(args.streams)]
            for client in clients:
                client.start()
            time.sleep(2)
            results = []
            for _ in range(args.kills):
                results.append(bench.kill_once())
                time.sleep(2)
            bench.stop.set()
            for client in clients:
                client.join()
        finally:
            bench.gateway.send_signal(signal.SIGINT)
            bench.gateway.wait(60)
        gateway = GATEWAY_LINE.findall(bench.log.read_text())
        replica_log = (bench.home / "logs" / "bench-0.log").read_text()
        loads = [float(x) for x in LOAD_LINE.findall(replica_log)][1:]  # the first is the initial start
    print(f"`{args.model.name}`, {args.instances} replica(s), {args.streams} streaming clients, load average "
          f"{os.getloadavg()[0]:.1f}; seconds per kill:")  # fmt: skip
    print("| kill | back (healthy, new pid) | first 200 | gateway: exit to serving | forked | fork to healthy | "
          "model load (replica log) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for i, (back, first) in enumerate(results):
        g = gateway[i] if i < len(gateway) else ("?", "?", "?")
        load = f"{loads[i]:.2f}" if i < len(loads) else "?"
        print(f"| {i + 1} | {back:.2f} | {first:.2f} | {g[0]} | {g[1]} | {g[2]} | {load} |")
    print(f"median back {statistics.median(r[0] for r in results):.2f} s, first 200 "
          f"{statistics.median(r[1] for r in results):.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
