"""Usage reports: metered requests grouped by deployment (and hour or day), with latency percentiles and cost.

Cost follows Azure's billing of the two deployment types:
- serverless: input and output tokens at per-1,000-token prices (the catalog's, unless the deployment
  overrides them in its settings: `input_price_per_1k`, `output_price_per_1k`), priced when the request ends
  and kept with its usage record. Filtered requests are billed like any other (Azure bills them); refused (429)
  requests used no tokens.
- managed compute: instance core-hours since the deployment was created, times the price per core-hour (the
  instance type's, unless overridden by `price_per_core_hour`), whether or not requests arrived. Only
  deployments that exist have compute cost: a deleted one's is unknown.
Requests with no price (the server's own model has none) are counted in `unpriced_requests` and left out of
the cost, so a total over priced and unpriced deployments is the priced part.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from llamafoundry.platform.catalog import (
    DEFAULT_INSTANCE_TYPE,
    MANAGED,
    UnknownModelError,
    find_instance_type,
    find_model,
)
from llamafoundry.platform.metering import UsageRecord, query_usage
from llamafoundry.platform.store import Deployment, Store

PERIODS = {"hour": 3600, "day": 86400}
TOTAL = "total"


@dataclass(frozen=True)
class Pricing:
    """What one deployment costs. Prices are USD; a price of None means unknown (the cost is then None)."""

    deployment_type: str
    input_per_1k: float | None = None
    output_per_1k: float | None = None
    created_at: float | None = None
    num_cores: int = 0
    price_per_core_hour: float | None = None

    def token_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.deployment_type == MANAGED:
            return 0.0
        if self.input_per_1k is None or self.output_per_1k is None:
            return None
        return prompt_tokens / 1000 * self.input_per_1k + completion_tokens / 1000 * self.output_per_1k

    def compute_cost(self, start: float, end: float) -> float | None:
        """Core-hours in [start, end) that the deployment existed for, times the price per core-hour."""
        if self.deployment_type != MANAGED:
            return 0.0
        if self.created_at is None or self.price_per_core_hour is None:
            return None
        seconds = max(0.0, end - max(start, self.created_at))
        return seconds / 3600 * self.num_cores * self.price_per_core_hour


def pricing_for(deployment: Deployment) -> Pricing:
    """The deployment's prices: its settings' overrides, else the catalog's and the instance type's."""
    settings = deployment.settings
    try:
        model = find_model(deployment.model)
        input_price, output_price = model.input_price_per_1k, model.output_price_per_1k
    except UnknownModelError:
        input_price = output_price = None
    instance_type = find_instance_type(deployment.instance_type or DEFAULT_INSTANCE_TYPE)
    return Pricing(
        deployment_type=deployment.type,
        input_per_1k=settings.get("input_price_per_1k", input_price),
        output_per_1k=settings.get("output_price_per_1k", output_price),
        created_at=deployment.created_at,
        num_cores=deployment.instances * instance_type.num_cores,
        price_per_core_hour=settings.get("price_per_core_hour", instance_type.price_per_core_hour),
    )


@dataclass
class UsageRow:
    """One line of a usage report. `period` is the start (unix seconds, UTC) of the hour or day, or None."""

    deployment: str
    period: float | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    throttled: int = 0
    filtered: int = 0
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    priced_cost: float = 0.0
    unpriced_requests: int = 0  # requests (or managed compute) with no known price, left out of the cost
    has_unpriced_compute: bool = False
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def cost(self) -> float | None:
        """What the priced part cost; None when nothing in the row has a price (the server's own model, a
        deleted deployment's compute)."""
        if self.priced_cost == 0.0 and (self.unpriced_requests or self.has_unpriced_compute):
            return None
        return self.priced_cost

    @property
    def is_partly_priced(self) -> bool:
        """Whether the cost leaves something out (the total over priced and unpriced deployments)."""
        return self.cost is not None and (self.unpriced_requests > 0 or self.has_unpriced_compute)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, record: UsageRecord, pricing: Pricing | None) -> None:
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.errors += record.is_error
        self.throttled += record.status == 429
        self.filtered += record.is_filtered
        if record.status < 400:
            self.latencies.append(record.latency_ms)
        cost = record.cost_usd
        if cost is None and pricing is not None:  # metered before costs were recorded, or with no price then
            cost = pricing.token_cost(record.prompt_tokens, record.completion_tokens)
        if cost is None:
            self.unpriced_requests += 1
        else:
            self.priced_cost += cost

    def add_compute(self, pricing: Pricing | None, start: float, end: float) -> None:
        cost = pricing.compute_cost(start, end) if pricing else None
        if cost is None:
            self.has_unpriced_compute = True
        else:
            self.priced_cost += cost

    def finish(self) -> UsageRow:
        self.p50_latency_ms = percentile(self.latencies, 50)
        self.p95_latency_ms = percentile(self.latencies, 95)
        return self

    def as_dict(self) -> dict[str, object]:
        return {
            "deployment": self.deployment,
            "period": period_label(self.period) if self.period is not None else None,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "errors": self.errors,
            "throttled": self.throttled,
            "filtered": self.filtered,
            "p50_latency_ms": _round(self.p50_latency_ms),
            "p95_latency_ms": _round(self.p95_latency_ms),
            "cost_usd": round(self.cost, 9) if self.cost is not None else None,  # a request can cost 1e-6 USD
            "unpriced_requests": self.unpriced_requests,
        }


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def period_start(timestamp: float, by: str) -> float:
    return timestamp - timestamp % PERIODS[by]


def period_label(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarize(
    records: Iterable[UsageRecord],
    pricing: Mapping[str, Pricing],
    *,
    by: str | None = None,
    since: float | None = None,
    now: float | None = None,
    deployment: str | None = None,
) -> list[UsageRow]:
    """Rows per deployment (and per hour/day with `by`), sorted, then a `total` row over everything.

    Args:
        records: the metered requests (already filtered by time and deployment).
        pricing: the prices of the deployments that exist; deployments listed here appear even without usage,
            and managed ones accrue compute cost over [max(since, created), now).
        by: None, `hour` or `day`.
    """
    now = time.time() if now is None else now
    rows: dict[tuple[str, float | None], UsageRow] = {}
    total = UsageRow(TOTAL)

    def row(name: str, period: float | None) -> UsageRow:
        return rows.setdefault((name, period), UsageRow(name, period))

    for record in records:
        period = period_start(record.created_at, by) if by else None
        row(record.deployment, period).add(record, pricing.get(record.deployment))
        total.add(record, pricing.get(record.deployment))
    for name, price in pricing.items():
        if deployment is not None and name != deployment:
            continue
        if price.deployment_type != MANAGED:
            if by is None:
                row(name, None)  # listed even when unused
            continue
        start = max(since or 0.0, price.created_at or 0.0)
        for period, (begin, end) in _periods(start, now, by):
            row(name, period).add_compute(price, begin, end)
        total.add_compute(price, start, now)
    ordered = sorted(rows.values(), key=lambda r: (r.deployment, r.period or 0.0))
    return [r.finish() for r in ordered] + [total.finish()]


def _periods(start: float, end: float, by: str | None) -> list[tuple[float | None, tuple[float, float]]]:
    """(period key, (begin, end)) covering [start, end)."""
    if by is None:
        return [(None, (start, end))]
    periods: list[tuple[float | None, tuple[float, float]]] = []
    begin = period_start(start, by)
    while begin < end:
        periods.append((begin, (max(begin, start), min(begin + PERIODS[by], end))))
        begin += PERIODS[by]
    return periods


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def parse_since(text: str, now: float | None = None) -> float:
    """A start time: an ISO date or date-time (UTC unless it says otherwise), or an age such as `24h`, `7d`."""
    now = time.time() if now is None else now
    value = text.strip()
    age = re.fullmatch(r"(\d+)\s*([mhd])", value.lower())
    if age:
        return now - int(age.group(1)) * {"m": 60, "h": 3600, "d": 86400}[age.group(2)]
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"'{text}' is not a date: give an ISO date such as 2026-01-31 (or 2026-01-31T12:00), or an age "
            "such as 24h or 7d."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def check_period(by: str | None) -> str | None:
    if by is not None and by not in PERIODS:
        raise ValueError(f"Cannot group usage by '{by}': use hour or day.")
    return by


CSV_COLUMNS = (
    "deployment", "period", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors",
    "throttled", "filtered", "p50_latency_ms", "p95_latency_ms", "cost_usd", "unpriced_requests",
)  # fmt: skip


def to_csv(rows: Iterable[UsageRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.as_dict().items()})
    return out.getvalue()


def report(
    engine: Engine,
    pricing: Mapping[str, Pricing],
    *,
    deployment: str | None = None,
    since: float | None = None,
    by: str | None = None,
    now: float | None = None,
    project: str | None = None,
) -> list[UsageRow]:
    """The usage report straight from the database (what `llamafoundry usage` and `/management/usage` show);
    with `project`, of that project's deployments only (`pricing` should then hold only theirs)."""
    now = time.time() if now is None else now
    records = query_usage(engine, since=since, deployment=deployment, project=project)
    if deployment is not None:
        pricing = {name: p for name, p in pricing.items() if name == deployment}
    return summarize(records, pricing, by=check_period(by), since=since, now=now, deployment=deployment)


def store_pricing(store: Store, project: str | None = None) -> dict[str, Pricing]:
    """The prices of every deployment in the store, or in `project` (deleted deployments have none: their cost is
    unknown)."""
    return {d.name: pricing_for(d) for d in store.list_deployments() if project is None or d.project == project}
