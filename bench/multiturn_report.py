"""Tables and the plot of a `bench multiturn` run: time to first token by turn index, per workload and server.

The markdown goes between `<!-- bench:BLOCK:start -->` and `<!-- bench:BLOCK:end -->` in docs/benchmarks.md
(BLOCK is `multiturn` unless `--doc-block` says otherwise; appended if the page has no such block yet).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

OURS, PEER = "llamafoundry", "llama-server"


def _s(ms: float | None) -> str:
    return "-" if ms is None or math.isnan(ms) else f"{ms / 1000:.2f} s"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def _p50(data: dict[str, Any], turn: int) -> float | None:
    return data["ttft_by_turn_ms"].get(str(turn), {}).get("p50")


def workload_table(run: dict[str, Any], workload: str) -> list[str]:
    servers = [name for name in run["servers"] if workload in run["servers"][name].get("workloads", {})]
    if not servers:
        return []
    data = {name: run["servers"][name]["workloads"][workload] for name in servers}
    turns = sorted({int(t) for d in data.values() for t in d["ttft_by_turn_ms"]})
    head = ["server", *[f"turn {t} TTFT p50" for t in turns], "turns 2+ TTFT p50", "output tok/s", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in servers:
        d = data[name]
        cells = [_s(d["ttft_by_turn_ms"].get(str(t), {}).get("p50")) for t in turns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_s(d['ttft_returning_ms']['p50'])} | "
                     f"{d['output_throughput']:.1f} | {d['failed']} |")  # fmt: skip
    if OURS in data and PEER in data:
        ours, peer = data[OURS], data[PEER]
        cells = [_ratio(_p50(ours, t), _p50(peer, t)) for t in turns]
        lines.append(f"| {OURS} / {PEER} | " + " | ".join(cells) + " | "
                     f"{_ratio(ours['ttft_returning_ms']['p50'], peer['ttft_returning_ms']['p50'])} | "
                     f"{_ratio(ours['output_throughput'], peer['output_throughput'])} | |")  # fmt: skip
    return lines


def markdown(run: dict[str, Any], plot_names: list[str]) -> str:
    s = run["settings"]
    lines = [
        f"Run of {run['date']} on {run['machine']} (`lscpu` model name: {run['machine'].split(',')[0]}); model "
        f"`{run['model']['path']}` ({run['model']['size_mib']:.0f} MiB). Both servers: {s['parallel']} slots, "
        f"{s['threads']} threads, {s['ctx_size']} tokens of context per slot, otherwise their defaults. A "
        f"conversation's first turn is {s['first_turn_len']} words, each later one {s['turn_len']}; answers are "
        f"{s['output_len']} tokens (`ignore_eos`), streamed and sent back as history; think time "
        f"{s['think_time_s']} s; {s['rounds']} round(s), TTFT pooled over them, tok/s their median.",
        "",
        f"Produced by: `{run['command']}`",
        "",
        "Load average (1/5/15 min) when each server started: "
        + "; ".join(f"{name} {d.get('load_at_start', '-')}" for name, d in run["servers"].items())
        + ".",
    ]
    for workload in s["workloads"]:
        conversations, rest = workload.split("x")
        turns, concurrency = rest.split("@")
        pressure = "more" if int(conversations) > s["parallel"] else "fewer"
        lines += ["", f"#### {conversations} conversations x {turns} turns, {concurrency} at a time ({pressure} "
                  f"conversations than the {s['parallel']} slots)", ""]  # fmt: skip
        lines += workload_table(run, workload)
    lines += ["", "| server | peak RSS (MiB) |", "|---|---|"]
    lines += [f"| {name} | {d.get('peak_rss_mib') or 0:.0f} |" for name, d in run["servers"].items()]
    counts = run["servers"].get("llamafoundry", {}).get("prefix_cache")
    if counts:  # where llamafoundry found the histories, over the whole run
        lines += ["", "llamafoundry's prefix cache over the run (its /metrics):", ""]
        lines += ["| counter | value |", "|---|---|"]
        lines += [f"| `{name}` | {value:.0f} |" for name, value in sorted(counts.items())]
    lines += [""] + [f"![{name}]({name})" for name in plot_names]
    return "\n".join(lines) + "\n"


def write_markdown(doc: Path, block: str, workloads: list[str], name: str = "multiturn") -> None:
    """Put `block` between the markers of block `name` in `doc` (appended under a heading if it has none yet)."""
    text = doc.read_text() if doc.exists() else ""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    body = f"{start}\n{block}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + body + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## Returning users: multi-turn conversations ({', '.join(workloads)})\n\n"
        text += body + "\n"
    doc.write_text(text)


def plot(run: dict[str, Any], out_dir: Path, stem: str = "benchmarks-multiturn") -> list[str]:
    """TTFT p50 by turn index, one panel per workload, one bar per server; returns the image's file name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    workloads = run["settings"]["workloads"]
    servers = list(run["servers"])
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 3.6), squeeze=False)
    for ax, workload in zip(axes[0], workloads, strict=True):
        for offset, name in enumerate(servers):
            by_turn = run["servers"][name].get("workloads", {}).get(workload, {}).get("ttft_by_turn_ms", {})
            turns = sorted(int(t) for t in by_turn)
            width = 0.8 / max(1, len(servers))
            xs = [t + (offset - (len(servers) - 1) / 2) * width for t in turns]
            ax.bar(xs, [by_turn[str(t)]["p50"] / 1000 for t in turns], width=width, label=name)
        ax.set_title(f"{workload} ({run['settings']['parallel']} slots)")
        ax.set_xlabel("turn")
        ax.set_ylabel("TTFT p50 (s)")
        ax.set_xticks(sorted({int(t) for n in servers for t in run["servers"][n].get("workloads", {}).get(
            workload, {}).get("ttft_by_turn_ms", {})}))  # fmt: skip
        ax.legend()
    fig.suptitle(f"Time to first token by turn, {run['machine'].split(',')[0]}")
    fig.tight_layout()
    name = f"{stem}.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
