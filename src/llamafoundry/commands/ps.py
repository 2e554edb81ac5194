"""`llamafoundry ps`: what is loaded and running, like `ollama ps`: each running server (from the reports every
`serve` writes to the store at least every 15 s), its own model and its deployments, their replicas, memory,
requests in flight, what they run with, and how long they have been up."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from typing import Any

from llamafoundry.commands.common import console
from llamafoundry.commands.runtime_view import RUNTIME_STALE_S, is_stale
from llamafoundry.commands.store_options import add_store_options, open_store

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def register(commands: argparse._SubParsersAction) -> None:
    ps = commands.add_parser("ps", help="what is loaded and running: servers, models, deployments, replicas")
    ps.add_argument("--all", action="store_true", help="also servers that stopped reporting (stale)")
    ps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_store_options(ps)
    ps.set_defaults(handler=_ps)


def _ps(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        reports = store.runtime_reports()
    now = time.time()
    rows = [_row(r.server, r.deployment, r.status, now - r.updated_at) for r in reports]
    rows = [row for row in rows if args.all or not row["stale"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        console.print("Nothing is running: no `llamafoundry serve` on this data directory has reported in the last "
                      f"{RUNTIME_STALE_S:.0f} s.")  # fmt: skip
        return 0
    _print(rows)
    return 0


def _row(server: str, name: str, status: dict[str, Any], age_s: float) -> dict[str, Any]:
    """One model or deployment as `ps` shows it; memory and uptime read from /proc for processes on this host."""
    local = server.rsplit(" pid ", 1)[0] == socket.gethostname()
    replicas = status.get("replicas") or []
    pids = [r["pid"] for r in replicas if r.get("pid")] or ([_server_pid(server)] if status.get("server_model") else [])
    rss = [_rss_bytes(pid) for pid in pids] if local else []
    started = [_started_at(pid) for pid in pids] if local else []
    in_flight = sum(status.get("in_flight") or []) if "in_flight" in status else status.get("running")
    sizing = status.get("sizing") or {}
    return {
        "server": server,
        "name": name,
        "kind": "server model" if status.get("server_model") else "deployment",
        "state": _state(status),
        "replicas": f"{sum(1 for r in replicas if r.get('healthy'))}/{len(replicas)}" if replicas else "-",
        "pids": pids,
        "memory_bytes": sum(b for b in rss if b is not None) if rss and None not in rss else None,
        "in_flight": in_flight,
        "waiting": status.get("waiting"),
        "context": f"{sizing['ctx_size']} x {sizing['parallel']}" if sizing else None,
        "up_s": round(time.time() - min(s for s in started if s is not None)) if started and None not in started
        else None,
        "reported_s_ago": round(age_s, 1),
        "stale": is_stale(age_s),
    }  # fmt: skip


def _state(status: dict[str, Any]) -> str:
    """The state, with a download's percentage (`downloading 42.0%`)."""
    state = str(status.get("state", "?"))
    percent = (status.get("progress") or {}).get("percent") if state == "downloading" else None
    return f"{state} {percent}%" if percent is not None else state


def _print(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="Running")
    for column in ("server", "name", "kind", "state", "replicas", "pid(s)", "memory", "in flight", "context x slots",
                   "up"):  # fmt: skip
        table.add_column(column)
    for row in rows:
        memory = f"{row['memory_bytes'] / 2**30:.2f} GiB" if row["memory_bytes"] is not None else "-"
        up = _duration(row["up_s"]) if row["up_s"] is not None else "-"
        state = row["state"] + (" (stale)" if row["stale"] else "")
        in_flight = "-" if row["in_flight"] is None else str(row["in_flight"])
        table.add_row(row["server"], row["name"], row["kind"], state, row["replicas"],
                      " ".join(map(str, row["pids"])) or "-", memory, in_flight, row["context"] or "-", up)  # fmt: skip
    console.print(table)


def _server_pid(server: str) -> int | None:
    tail = server.rsplit(" pid ", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else None


def _rss_bytes(pid: int | None) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _started_at(pid: int | None) -> float | None:
    """When process `pid` started (the epoch), from /proc: the boot time plus its start in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as machine:
            boot = next(int(line.split()[1]) for line in machine if line.startswith("btime"))
    except (OSError, ValueError, StopIteration, IndexError):
        return None
    return boot + ticks / _CLOCK_TICKS


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
