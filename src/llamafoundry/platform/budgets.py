"""Spend budgets: USD per project or per project key, per UTC day or month.

Spend is what the usage records say requests cost (`usage.cost_usd`: the tokens of serverless deployments at
their prices; a stream is counted for what it generated, a stream cut by a disconnect too). Managed compute is
billed by core-hours whether or not requests come, so a budget does not count or stop it.

`BudgetGuard` answers, at admission, whether the caller's project or key has spent a budget (then the request
gets a 429 saying which budget, how much, and when it resets). It reads the spend from the store, which every
gateway writes its usage to (within a second: the meter's flush), so gateways sharing one database share the
budgets; a cached answer is at most `CACHE_S` old. Its watcher calls a budget's webhook once when the spend
reaches 80 % and once at 100 % of each period; the store remembers what was sent (`budget_alerts`), so two
gateways never both send one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import sqlalchemy as sa

from llamafoundry.platform.errors import ProjectError, ProjectNotFound
from llamafoundry.platform.metering import usage
from llamafoundry.platform.project_keys import find_key
from llamafoundry.platform.projects import get_project
from llamafoundry.platform.store import Store, StoreConflict, metadata

PERIODS = ("day", "month")
PROJECT_SCOPE = "project"
THRESHOLDS = (80, 100)
CACHE_S = 1.0
WATCH_INTERVAL_S = 2.0
WEBHOOK_TIMEOUT_S = 10.0
logger = logging.getLogger(__name__)

budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(64), sa.ForeignKey("projects.name", ondelete="CASCADE"), nullable=False),
    sa.Column("scope", sa.String(64), nullable=False),
    sa.Column("period", sa.String(8), nullable=False),
    sa.Column("amount_usd", sa.Float, nullable=False),
    sa.Column("webhook_url", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
)
budget_alerts = sa.Table(
    "budget_alerts",
    metadata,
    sa.Column("budget_id", sa.Integer, sa.ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("period_start", sa.Float, primary_key=True),
    sa.Column("threshold", sa.Integer, primary_key=True),
    sa.Column("sent_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Budget:
    id: int
    project: str
    scope: str  # PROJECT_SCOPE, or a project key's id
    period: str
    amount_usd: float
    webhook_url: str | None
    created_at: float

    @property
    def what(self) -> str:
        return f"project '{self.project}'" if self.scope == PROJECT_SCOPE else f"key {self.scope} of '{self.project}'"

    def describe(self, spent_usd: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"project": self.project, "scope": self.scope, "period": self.period,
                                "amount_usd": self.amount_usd}  # the webhook URL may hold a secret
        body["webhook"] = "set" if self.webhook_url else None
        if spent_usd is not None:
            body["spent_usd"] = round(spent_usd, 6)
        return body


@dataclass(frozen=True)
class Exhausted:
    """A budget that is spent, and by how much; what the 429 says."""

    budget: Budget
    spent_usd: float
    resets_at: float

    def message(self) -> str:
        resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.resets_at))
        return (
            f"The {'daily' if self.budget.period == 'day' else 'monthly'} budget of {self.budget.what} "
            f"(USD {self.budget.amount_usd:.2f}) is spent (USD {self.spent_usd:.4f} this {self.budget.period}). "
            f"Requests are accepted again at {resets}, or once the project's administrator raises the budget."
        )


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """[start, end) of the UTC day or month holding `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


def set_budget(
    store: Store, project: str, period: str, amount_usd: float, *, key: str | None = None,
    webhook_url: str | None = None, now: float | None = None,
) -> Budget:  # fmt: skip
    """Set (or replace) the budget of a project, or of one of its keys (by name or id), for a day or a month."""
    project = get_project(store, project).name
    if period not in PERIODS:
        raise ProjectError(f"A budget is per day or per month, not per '{period}'.")
    if not amount_usd > 0:
        raise ProjectError(f"A budget must be more than 0 USD, got {amount_usd}. Remove it to have none.")
    if webhook_url is not None and urlparse(webhook_url).scheme not in ("http", "https"):
        raise ProjectError("The webhook must be an http(s) URL that accepts a POST of JSON.")
    scope = find_key(store, project, key).id if key else PROJECT_SCOPE
    values = {"project": project, "scope": scope, "period": period, "amount_usd": float(amount_usd),
              "webhook_url": webhook_url, "created_at": time.time() if now is None else now}  # fmt: skip
    where = (budgets.c.project == project) & (budgets.c.scope == scope) & (budgets.c.period == period)
    try:
        with store.write() as conn:
            if not conn.execute(budgets.update().where(where).values(**values)).rowcount:
                conn.execute(budgets.insert().values(**values))
    except StoreConflict:  # set at the same moment by another process: its write stands
        pass
    return next(b for b in list_budgets(store, project) if b.scope == scope and b.period == period)


def remove_budget(store: Store, project: str, period: str, key: str | None = None) -> None:
    project = get_project(store, project).name
    scope = find_key(store, project, key).id if key else PROJECT_SCOPE
    where = (budgets.c.project == project) & (budgets.c.scope == scope) & (budgets.c.period == period)
    with store.write() as conn:
        if not conn.execute(budgets.delete().where(where)).rowcount:
            raise ProjectNotFound(f"There is no {period} budget on {key or 'project ' + project}; nothing was removed.")


def list_budgets(store: Store, project: str | None = None) -> list[Budget]:
    query = sa.select(budgets).order_by(budgets.c.project, budgets.c.scope, budgets.c.period)
    if project is not None:
        query = query.where(budgets.c.project == project)
    with store.engine.connect() as conn:
        return [Budget(**dict(row)) for row in conn.execute(query).mappings()]


def spent(store: Store, budget: Budget, now: float | None = None) -> float:
    """USD spent under `budget` in its current period."""
    start, _ = period_bounds(budget.period, time.time() if now is None else now)
    query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0)).where(
        usage.c.project == budget.project, usage.c.created_at >= start
    )
    if budget.scope != PROJECT_SCOPE:
        query = query.where(usage.c.key_id == budget.scope)
    with store.engine.connect() as conn:
        return float(conn.execute(query).scalar_one())


class BudgetGuard:
    """Budgets at admission (`check`) and their webhooks (`start` runs the watcher)."""

    def __init__(self, store: Store, watch_interval_s: float = WATCH_INTERVAL_S, cache_s: float = CACHE_S) -> None:
        self.store = store
        self.watch_interval_s = watch_interval_s
        self.cache_s = cache_s
        self._budgets: tuple[float, list[Budget]] | None = None
        self._spent: dict[int, tuple[float, float]] = {}  # budget id -> (when read, spent)
        self._task: asyncio.Task[None] | None = None

    async def check(self, project: str | None, key_id: str | None) -> Exhausted | None:
        """The first spent budget of the project or of the key, or None (also when the store cannot tell)."""
        if project is None:
            return None
        cached = self._budgets
        if cached is not None and time.time() - cached[0] < self.cache_s:
            if not any(b.project == project and b.scope in (PROJECT_SCOPE, key_id) for b in cached[1]):
                return None  # the common case, answered without a thread or a query
        try:
            return await asyncio.to_thread(self._check, project, key_id)
        except sa.exc.SQLAlchemyError as exc:  # the usage is still metered (journaled); the budget is checked later
            logger.warning("budgets not checked, the store cannot be read: %s", str(exc).splitlines()[0])
            return None

    def _check(self, project: str, key_id: str | None) -> Exhausted | None:
        now = time.time()
        for budget in self._current_budgets(now):
            if budget.project == project and budget.scope in (PROJECT_SCOPE, key_id):
                amount = self._spent_now(budget, now)
                if amount >= budget.amount_usd:
                    return Exhausted(budget, amount, period_bounds(budget.period, now)[1])
        return None

    def _current_budgets(self, now: float) -> list[Budget]:
        if self._budgets is None or now - self._budgets[0] >= self.cache_s:
            self._budgets = (now, list_budgets(self.store))
        return self._budgets[1]

    def _spent_now(self, budget: Budget, now: float) -> float:
        cached = self._spent.get(budget.id)
        if cached is None or now - cached[0] >= self.cache_s:
            cached = (now, spent(self.store, budget, now))
            self._spent[budget.id] = cached
        return cached[1]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S) as client:
            while True:
                try:
                    for budget, threshold, amount in await asyncio.to_thread(self._due_alerts):
                        await _send(client, budget, threshold, amount)
                except Exception as exc:  # a database hiccup must not end the watcher
                    logger.warning("checking the budgets' webhooks failed: %s", exc)
                await asyncio.sleep(self.watch_interval_s)

    def _due_alerts(self) -> list[tuple[Budget, int, float]]:
        """Thresholds reached and not alerted yet this period, each claimed in the store (one gateway sends it)."""
        now, due = time.time(), []
        for budget in list_budgets(self.store):
            if not budget.webhook_url:
                continue
            amount = spent(self.store, budget, now)
            start, _ = period_bounds(budget.period, now)
            for threshold in THRESHOLDS:
                if amount >= budget.amount_usd * threshold / 100 and self._claim(budget, start, threshold, now):
                    due.append((budget, threshold, amount))
        return due

    def _claim(self, budget: Budget, period_start: float, threshold: int, now: float) -> bool:
        row = {"budget_id": budget.id, "period_start": period_start, "threshold": threshold, "sent_at": now}
        try:
            with self.store.engine.begin() as conn:
                conn.execute(budget_alerts.insert().values(**row))
        except sa.exc.IntegrityError:
            return False  # sent already (by this gateway or another)
        return True


async def _send(client: httpx.AsyncClient, budget: Budget, threshold: int, amount: float) -> None:
    assert budget.webhook_url is not None
    body = {"event": "budget.threshold", "threshold_percent": threshold, "project": budget.project,
            "scope": budget.scope, "period": budget.period, "amount_usd": budget.amount_usd,
            "spent_usd": round(amount, 6), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    try:
        response = await client.post(budget.webhook_url, json=body)
        response.raise_for_status()
        logger.info("budget webhook sent: %s reached %d %% of its %s budget", budget.what, threshold, budget.period)
    except httpx.HTTPError as exc:  # the URL is not logged: it may carry a secret
        logger.warning("the budget webhook of %s (%d %%) failed: %s", budget.what, threshold, type(exc).__name__)
