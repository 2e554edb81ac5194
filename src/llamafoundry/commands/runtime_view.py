"""How the commands show the runtime reports every `serve` writes to the store (`Gateway.report_runtime`):
`deploy show` per deployment, `ps` per server."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llamafoundry.commands.common import console

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported by the commands that open one, not by every CLI start
    from llamafoundry.platform.store import RuntimeReport

RUNTIME_STALE_S = 60.0  # a server re-reports at least every 15 s (Gateway.report_runtime); older: it stopped


def is_stale(age_s: float) -> bool:
    """A report this old comes from a server that stopped."""
    return age_s > RUNTIME_STALE_S


def runtime_entry(report: RuntimeReport, now: float | None = None) -> dict[str, Any]:
    """A server's report as `deploy show` gives it: its status, when it was made, and whether it is stale."""
    from llamafoundry.platform.store import iso_time

    age = (time.time() if now is None else now) - report.updated_at
    return {"server": report.server, "updated_at": iso_time(report.updated_at), "age_s": round(age, 1),
            "stale": is_stale(age), **report.status}  # fmt: skip


def print_runtime(entries: list[dict[str, Any]]) -> None:
    if not entries:
        console.print("Runtime: no running server has reported this deployment (start `llamafoundry serve`).")
        return
    for entry in entries:
        stale = " [yellow](stale: that server stopped reporting)[/yellow]" if entry["stale"] else ""
        console.print(f"Runtime on {entry['server']}, {entry['age_s']:.0f} s ago{stale}: [bold]{entry['state']}"
                      f"[/bold]" + (f": {entry['error']}" if entry.get("error") else ""), soft_wrap=True)  # fmt: skip
        if entry.get("sizing"):
            console.print(f"  runs with: {sizing_line(entry['sizing'])}", soft_wrap=True, highlight=False)
        for replica in entry.get("replicas") or []:
            health = "healthy" if replica.get("healthy") else "not healthy"
            line = f"  replica {replica['index']} (pid {replica['pid']}, {replica['url']}): {health}, " \
                   f"{replica['restarts']} restart(s)"
            if replica.get("last_exit"):
                line += f"; last exit at {replica['last_exit_at']}: it {replica['last_exit']}"
            console.print(line, soft_wrap=True, highlight=False)
        for upstream in entry.get("upstreams") or []:
            console.print(f"  {upstream_line(upstream)}", soft_wrap=True, highlight=False)


def upstream_line(upstream: dict[str, Any]) -> str:
    """One server of an --upstream pool: its health, its load and its last error."""
    line = f"upstream {upstream['url']}: {'up' if upstream['up'] else 'DOWN'}, {upstream['in_flight']} in flight, " \
           f"{upstream['requests']} request(s), {upstream['retries']} passed on to another"
    if upstream.get("last_error"):
        line += f"; last error at {upstream['last_error_at']}: {upstream['last_error']}"
    return line


def sizing_line(sizing: dict[str, Any]) -> str:
    return (
        f"context {sizing['ctx_size']} tokens x {sizing['parallel']} parallel, {sizing['threads']} thread(s), KV "
        f"{sizing['kv_cache_type']}, flash attention {sizing['flash_attn']}, {sizing['gpu_layers']} GPU layer(s), "
        f"{sizing['speculative_tokens']} speculative token(s)"
    )
