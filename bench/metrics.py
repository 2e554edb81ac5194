"""Per-request timings and the vLLM `bench serve` summary over them (TTFT, TPOT, ITL, E2EL, req/s, tok/s).

Names follow vLLM's `BenchmarkMetrics` so CPU and GPU numbers compare:

- TTFT: request sent -> first chunk that carries generated text.
- TPOT: (E2EL - TTFT) / (output tokens - 1), per request.
- ITL: gaps between successive text-bearing chunks, pooled over all requests.
- E2EL: request sent -> stream closed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    """What the client saw of one request. Times are seconds on the client's monotonic clock."""

    ok: bool
    start: float
    ttft: float = 0.0
    e2el: float = 0.0
    itl: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str = ""
    output_text: str = ""

    @property
    def tpot(self) -> float | None:
        if self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)


@dataclass
class Summary:
    """One load level: counts, rates, and latency statistics in milliseconds."""

    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2el_ms: dict[str, float]
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def latency_stats(values_s: list[float]) -> dict[str, float]:
    """mean, p50, p90, p99 (and count) in milliseconds; NaN when there are no values."""
    if not values_s:
        return {"mean": float("nan"), **{f"p{p}": float("nan") for p in PERCENTILES}, "n": 0}
    ms = np.asarray(values_s, dtype=np.float64) * 1000.0
    stats = {"mean": float(ms.mean())}
    stats.update({f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES})
    stats["n"] = int(ms.size)
    return stats


def summarize(results: list[RequestResult], duration_s: float) -> Summary:
    """Aggregate one level's requests; rates divide by the wall time of the whole level."""
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    total_out = sum(r.output_tokens for r in done)
    total_in = sum(r.prompt_tokens for r in done)
    duration_s = max(duration_s, 1e-9)
    return Summary(
        completed=len(done),
        failed=len(failed),
        duration_s=duration_s,
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        request_throughput=len(done) / duration_s,
        output_throughput=total_out / duration_s,
        total_token_throughput=(total_in + total_out) / duration_s,
        ttft_ms=latency_stats([r.ttft for r in done]),
        tpot_ms=latency_stats([t for r in done if (t := r.tpot) is not None]),
        itl_ms=latency_stats([gap for r in done for gap in r.itl]),
        e2el_ms=latency_stats([r.e2el for r in done]),
        errors=sorted({r.error for r in failed})[:5],
    )


def first_wave_ttft(results: list[RequestResult], concurrency: int) -> tuple[list[float], list[float]]:
    """TTFTs (seconds) of the first `concurrency` requests sent in a level, and of the rest.

    With a shared system prompt the first wave is sent together, before any reply: the prompt is cached nowhere
    yet (the case where a server computes it once or once per request); later requests find it cached.
    """
    ordered = sorted((r for r in results if r.ok), key=lambda r: r.start)
    return [r.ttft for r in ordered[:concurrency]], [r.ttft for r in ordered[concurrency:]]


def request_timeline(results: list[RequestResult]) -> list[dict[str, object]]:
    """Every request in the order sent: when (seconds after the first was sent), its TTFT and end-to-end latency
    (ms), its token counts and error. Percentiles hide the waves a shared prefix or a burst makes; this shows them
    (which requests got their first token together, which waited for a step of others' prompts)."""
    if not results:
        return []
    first = min(r.start for r in results)
    return [
        {
            "sent_s": round(r.start - first, 3),
            "ok": r.ok,
            "ttft_ms": round(r.ttft * 1000, 1) if r.ok else None,
            "e2el_ms": round(r.e2el * 1000, 1) if r.ok else None,
            "prompt_tokens": r.prompt_tokens,
            "output_tokens": r.output_tokens,
            "error": r.error,
        }
        for r in sorted(results, key=lambda r: r.start)
    ]
