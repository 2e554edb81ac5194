"""Tables, ratios and plots of a side-by-side run (the JSON that bench/compare.py writes).

The markdown goes between `<!-- bench:results:start -->` and `<!-- bench:results:end -->` in docs/benchmarks.md,
so the hand-written parts of that page (method, profiling notes) survive a re-run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
OURS = "llamafoundry"
PEER = "llama-server"


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    text = _fmt(value, 0)
    return text if text == "-" else f"{text} ms"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def level(run: dict[str, Any], server: str, workload: str, concurrency: int) -> dict[str, Any] | None:
    return run["servers"].get(server, {}).get("levels", {}).get(workload, {}).get(str(concurrency))


def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    text = (
        f"{_fmt(summary['output_throughput'])} tok/s, TTFT p50 {_fmt(summary['ttft_ms']['p50'], 0)} ms, "
        f"ITL p50/p99 {_fmt(summary['itl_ms']['p50'], 0)}/{_fmt(summary['itl_ms']['p99'], 0)} ms"
    )
    if summary["failed"]:
        text += f", **{summary['failed']} of {summary['completed'] + summary['failed']} failed**"
    return text


def throughput_table(run: dict[str, Any], workload: str) -> list[str]:
    servers = list(run["servers"])
    levels = sorted({int(c) for s in servers for c in run["servers"][s].get("levels", {}).get(workload, {})})
    if not levels:
        return []
    has_raw = workload == "random" and bool(run.get("raw"))
    head = ["concurrency", *servers, *(["raw llama_decode loop"] if has_raw else [])]
    head += [f"{OURS} / {s}" for s in servers if s != OURS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in levels:
        row = [str(c), *[_cell(level(run, s, workload, c)) for s in servers]]
        if has_raw:
            raw = run["raw"].get(str(c))
            row.append(f"{_fmt(raw['decode_tok_s'])} tok/s (decode only)" if raw else "-")
        ours = level(run, OURS, workload, c)
        for s in servers:
            if s == OURS:
                continue
            peer = level(run, s, workload, c)
            tput = _ratio(ours and ours["output_throughput"], peer and peer["output_throughput"])
            ttft = _ratio(ours and ours["ttft_ms"]["p50"], peer and peer["ttft_ms"]["p50"])
            row.append(f"{tput} tok/s, {ttft} TTFT p50")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def single_stream_lines(run: dict[str, Any]) -> list[str]:
    """Streamed decode rate (1 / TPOT) at one stream against the raw loop at batch 1."""
    raw = run.get("raw", {}).get("1")
    lines = []
    for s in run["servers"]:
        summary = level(run, s, "random", 1)
        if summary is None or not raw:
            continue
        rate = 1000.0 / summary["tpot_ms"]["mean"] if summary["tpot_ms"]["n"] else float("nan")
        lines.append(f"| {s} | {_fmt(rate)} | {_fmt(raw['decode_tok_s'])} | {_ratio(rate, raw['decode_tok_s'])} |")
    if not lines:
        return []
    return ["| server | streamed decode tok/s (1 / mean TPOT) | raw loop tok/s | ratio |", "|---|---|---|---|", *lines]


def wave_lines(run: dict[str, Any]) -> list[str]:
    """Shared-prefix TTFT of the first wave (sent together, the system prompt cached nowhere) and of the rest."""
    rows = []
    for s in run["servers"]:
        for c in sorted(run["servers"][s].get("levels", {}).get("shared-prefix", {}), key=int):
            summary = level(run, s, "shared-prefix", c)
            ours = level(run, OURS, "shared-prefix", c)
            if not summary or "ttft_first_wave_ms" not in summary:
                continue
            first, later = summary["ttft_first_wave_ms"], summary["ttft_later_ms"]
            ratio = "-"
            if s != OURS and ours and "ttft_first_wave_ms" in ours:
                ratio = _ratio(ours["ttft_first_wave_ms"]["p50"], first["p50"])
            rows.append(f"| {s} | {c} | {_ms(first['p50'])} / {_ms(first['p99'])} | {_ms(later['p50'])} | {ratio} |")
    if not rows:
        return []
    return [
        "Time to first token by wave: the first requests are sent together before any reply, so the system prompt",
        "is cached nowhere yet; later requests are sent as earlier ones finish and find it cached.",
        "",
        "| server | concurrency | first wave TTFT p50 / p99 | later requests TTFT p50 | llamafoundry / this server, "
        "first wave p50 |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def memory_lines(run: dict[str, Any]) -> list[str]:
    lines = ["| server | peak RSS (MiB) |", "|---|---|"]
    for s, data in run["servers"].items():
        lines.append(f"| {s} | {_fmt(data.get('peak_rss_mib'), 0)} |")
    return lines


def markdown(run: dict[str, Any], plot_names: list[str]) -> str:
    cfg = run["config"]
    out = [
        START,
        f"Run of {run['date']} on {run['machine']}; model `{run['model']['path']}` "
        f"({run['model']['size_mib']:.0f} MiB). "
        f"Every server: {cfg['threads']} threads, {cfg['ctx_size']} tokens of context per sequence, "
        f"{cfg['parallel']} parallel sequences where it has them; {cfg['output_len']} output tokens per request "
        f"(`temperature 0`, `ignore_eos`), prompts of about {cfg['input_len']} tokens plus the chat template.",
        "",
        f"Produced by: `{run['command']}`",
        "",
        f"Each level ran {cfg.get('rounds', 1)} time(s) on every server, servers taking turns level by level: "
        "tokens/s are the median over rounds, latency percentiles pool the requests of all rounds. "
        "Ratios compare servers measured minutes apart on the same machine.",
        "",
        "Load average (1/5/15 min) when each server started: "
        + "; ".join(f"{s} {d.get('load_at_start', '-')}" for s, d in run["servers"].items())
        + ".",
        "",
        "### Random prompts, fixed concurrency",
        "",
        *throughput_table(run, "random"),
        "",
    ]
    single = single_stream_lines(run)
    if single:
        out += ["### Single stream against the raw loop", "", *single, ""]
    for workload, title in (("shared-prefix", "Shared system prompt"), ("chat", "Multi-turn chat")):
        table = throughput_table(run, workload)
        if table:
            out += [f"### {title} ({run['workloads'][workload]})", "", *table, ""]
        if workload == "shared-prefix":
            out += wave_lines(run)
    out += ["### Memory", "", *memory_lines(run), ""]
    for name in plot_names:
        out += [f"![{name}]({name})", ""]
    failures = [
        f"- {s}, {w} at {c}: {'; '.join(summary['errors'])}"
        for s, data in run["servers"].items()
        for w, levels in data.get("levels", {}).items()
        for c, summary in levels.items()
        if summary["errors"]
    ]
    if failures:
        out += ["Failures seen by the client:", "", *failures, ""]
    out.append(END)
    return "\n".join(out)


def write_markdown(doc: Path, block: str) -> None:
    """Replace the results block of `doc` (or append one)."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Latest side-by-side run\n\n" + block + "\n"
    doc.write_text(text)


def can_plot() -> bool:
    """matplotlib is in the `bench` extra; without it the tables are still written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(run: dict[str, Any], out_dir: Path, stem: str = "benchmarks") -> list[str]:
    """Throughput and latency against concurrency (random workload); returns the PNG file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tput, ax_itl, ax_ttft) = plt.subplots(1, 3, figsize=(15, 4.5))
    for s in run["servers"]:
        levels = sorted(int(c) for c in run["servers"][s].get("levels", {}).get("random", {}))
        points = [(c, level(run, s, "random", c)) for c in levels]
        points = [(c, p) for c, p in points if p and p["completed"]]
        if not points:
            continue
        xs = [c for c, _ in points]
        ax_tput.plot(xs, [p["output_throughput"] for _, p in points], marker="o", label=s)
        ax_itl.plot(xs, [p["itl_ms"]["p99"] for _, p in points], marker="o", label=s)
        ax_ttft.plot(xs, [p["ttft_ms"]["p50"] for _, p in points], marker="o", label=s)
    raw = sorted((int(c), r["decode_tok_s"]) for c, r in run.get("raw", {}).items())
    if raw:
        ax_tput.plot([c for c, _ in raw], [v for _, v in raw], linestyle="--", color="gray", label="raw llama_decode")
    for ax, title in (
        (ax_tput, "output tokens/s (higher is better)"),
        (ax_itl, "inter-token latency p99, ms"),
        (ax_ttft, "time to first token p50, ms"),
    ):
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    ax_tput.legend()
    fig.suptitle(f"{run['model']['name']} on {run['machine']}", fontsize=10)
    fig.tight_layout()
    name = f"{stem}-concurrency.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
