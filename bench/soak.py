"""Memory soak: thousands of mixed valid and invalid requests (the fuzz test's strategies) against a gateway with
a replica deployment and an upstream deployment, sampling the resident memory of the gateway and its replicas.

    llamafoundry bench soak --requests 5200 --concurrency 4 --plot docs/benchmarks-soak.png

It prints one table row per process (RSS when ready, after the first tenth of the requests, at the half, at the
end; the growth over the second half per 1,000 requests) and saves the samples as JSON, and a plot of RSS
against requests sent. A process whose memory levels off grows ~0 MiB per 1,000 requests in the second half.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings

from bench.fuzz_requests import FuzzRequest, FuzzTarget, fuzz_requests

API_KEY = "soak0123456789abcdef0123456789ab"
OWN_MODEL = "soak-llama"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="GGUF of the gateway and the replica "
                        "(default: the embedded demo model)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=5200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=22, help="the requests' hypothesis seed")
    parser.add_argument("--threads", type=int, default=1, help="threads of the gateway's model and of the replica")
    parser.add_argument("--port", type=int, default=18731)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    parser.add_argument("--plot", type=Path, default=None, help="save the RSS plot here (PNG)")


@dataclass
class Samples:
    """RSS (MiB) of each process over time, with the number of requests answered at each sample."""

    started: float = field(default_factory=time.monotonic)
    rows: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0

    def take(self, processes: dict[str, int]) -> None:
        rss = {name: rss_mib(pid) for name, pid in processes.items()}
        self.rows.append({"t": round(time.monotonic() - self.started, 1), "answered": self.answered, "rss_mib": rss})


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def fleet_pids(gateway_pid: int) -> dict[str, int]:
    """The gateway and its replica processes (its children running `serve --replica`), by name."""
    found = {"gateway": gateway_pid}
    for children in Path(f"/proc/{gateway_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"--replica" in argv:
                    name = argv[argv.index(b"--name") + 1].decode() if b"--name" in argv else pid
                    found[f"replica {name}"] = int(pid)
    return found


def generate(targets: list[FuzzTarget], count: int, seed_value: int) -> list[FuzzRequest]:
    """`count` requests from the fuzz strategies, the same for the same seed."""
    out: list[FuzzRequest] = []

    @seed(seed_value)
    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(request=fuzz_requests(targets))
    def collect(request: FuzzRequest) -> None:
        out.append(request)

    collect()
    return out[:count]


def start_fleet(
    model: Path | None, home: Path, port: int, threads: int
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """`serve` over `home` with a replica deployment and an upstream one (to its own /v1); the deployments' keys."""
    url = f"http://127.0.0.1:{port}"
    weights = str(model) if model is not None else str(demo_model())
    keys = {
        "replica": cli(home, "deploy", "create", "replica", "--model", "Llama-3.2-1B-Instruct", "--type", "managed",
                       "--weights", weights)["primary_key"],
        "upstream": cli(home, "deploy", "create", "upstream", "--model", "Meta-Llama-3.1-8B-Instruct", "--upstream",
                        f"{url}/v1", "--upstream-key", API_KEY, "--upstream-model", OWN_MODEL)["primary_key"],
    }  # fmt: skip
    from llamafoundry.platform.store import Store

    store = Store.open(home)
    store.update_settings("replica", {"ctx_size": 1024, "parallel": 4, "threads": threads})
    store.close()
    args = [sys.executable, "-m", "llamafoundry", "serve", "--data-dir", str(home), "--model", weights, "--name",
            OWN_MODEL, "--api-key", API_KEY, "--port", str(port), "--threads", str(threads), "--ctx-size", "1024",
            "--parallel", "4"]  # fmt: skip
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    for name, key in {"own": API_KEY, **keys}.items():
        path = "/chat/completions" if name == "own" else f"/deployments/{name}/chat/completions"
        while not _answers(url + path, key, body):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway or {name} did not start; see {home / 'serve.log'}")
            time.sleep(0.5)
    return process, keys


def _answers(url: str, key: str, body: dict[str, Any]) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.post(url, json=body, headers={"api-key": key}, timeout=30).status_code == 200
    return False


def demo_model() -> Path:
    from llamafoundry.model.demo import demo_model_path

    return demo_model_path()


def cli(home: Path, *argv: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "llamafoundry", *argv, "--json", "--data-dir", str(home)],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out)


async def send_all(url: str, requests: list[FuzzRequest], concurrency: int, samples: Samples) -> collections.Counter:
    statuses: collections.Counter[str] = collections.Counter()
    queue = iter(requests)

    async def worker(client: httpx.AsyncClient) -> None:
        for request in queue:
            try:
                response = await client.request(request.method, request.path, content=request.content,
                                                headers=request.headers)  # fmt: skip
                streamed_error = response.status_code == 200 and b'"error":{' in response.content
                statuses["error event" if streamed_error else str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            samples.answered += 1

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return statuses


def summarize(samples: Samples, num_requests: int) -> list[str]:
    """The table rows: RSS when ready, after 10%, at 50%, at the end; growth over the second half."""
    names = sorted({name for row in samples.rows for name in row["rss_mib"]})
    lines = ["| process | ready | 10% | 50% | end | second half, MiB per 1,000 requests |", "|---|---|---|---|---|---|"]

    def at(name: str, answered: float) -> float:
        row = min(samples.rows, key=lambda r: abs(r["answered"] - answered))
        return float(row["rss_mib"].get(name) or 0.0)

    for name in names:
        ready, tenth, half, end = (at(name, f * num_requests) for f in (0, 0.1, 0.5, 1.0))
        slope = (end - half) / (num_requests / 2) * 1000
        lines.append(f"| {name} | {ready:.0f} MiB | {tenth:.0f} MiB | {half:.0f} MiB | {end:.0f} MiB | {slope:+.1f} |")
    return lines


def plot(samples: Samples, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in sorted({name for row in samples.rows for name in row["rss_mib"]}):
        points = [(r["answered"], r["rss_mib"][name]) for r in samples.rows if r["rss_mib"].get(name) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
    ax.set_xlabel("requests answered")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        home = Path(tmp)
        process, keys = start_fleet(args.model, home, args.port, args.threads)
        try:
            return _soak(args, process, keys)
        finally:
            process.terminate()  # SIGTERM: the gateway drains and stops its replicas
            process.wait(timeout=60)


def _soak(args: argparse.Namespace, process: subprocess.Popen[bytes], keys: dict[str, str]) -> int:
    url = f"http://127.0.0.1:{args.port}"
    targets = [
        FuzzTarget("own", API_KEY, ("/chat/completions", "/v1/chat/completions"), ("/v1/completions",)),
        *(FuzzTarget(name, key, (f"/deployments/{name}/chat/completions",), ("/v1/completions",),
                     {"azureml-model-deployment": name}) for name, key in keys.items()),
    ]  # fmt: skip
    requests = generate(targets, args.requests, args.seed)
    samples = Samples()
    samples.take(fleet_pids(process.pid))
    stop = threading.Event()

    def sample_loop() -> None:
        while not stop.wait(args.interval):
            samples.take(fleet_pids(process.pid))  # looked up each time: a replica that restarts has a new pid

    sampler = threading.Thread(target=sample_loop, daemon=True)
    sampler.start()
    started = time.monotonic()
    statuses = asyncio.run(send_all(url, requests, args.concurrency, samples))
    stop.set()
    sampler.join()
    samples.take(fleet_pids(process.pid))
    cpu = cpu_model()
    print(f"{len(requests)} requests in {time.monotonic() - started:.0f} s, concurrency {args.concurrency}; "
          f"answers: {dict(sorted(statuses.items()))}; CPU: {cpu}")  # fmt: skip
    table = summarize(samples, len(requests))
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"requests": len(requests), "concurrency": args.concurrency, "statuses": dict(statuses), "cpu": cpu,
              "python": platform.python_version(), "samples": samples.rows}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1))
    if args.plot is not None:
        plot(samples, args.plot, f"{len(requests)} fuzzed requests, concurrency {args.concurrency} ({cpu})")
    return 1 if any(s.startswith("5") or s == "error event" for s in statuses) else 0


def cpu_model() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
