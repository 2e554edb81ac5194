"""Usage: charts of tokens, requests and cost per deployment over time (by hour or day), rate-limit refusals and
content-filter blocks, the table and its CSV (all from `GET /management/usage`), and the server's health from
its metrics (`health.py`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llamafoundry.api.portal.client import ApiClient
from llamafoundry.api.portal.health import HealthReader
from llamafoundry.api.portal.sessions import READ_USAGE, Session
from llamafoundry.api.portal.web import PREFIX, Portal, Route

SINCE_CHOICES = (("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"),
                 ("", "All time"))  # fmt: skip
SERIES = (("total_tokens", "Tokens"), ("requests", "Requests"), ("cost_usd", "Cost (USD)"),
          ("throttled", "Rate-limit refusals (429)"), ("filtered", "Content-filter blocks"))  # fmt: skip


def chart_data(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The charts' data: the periods in order and, per series, one list of values per deployment."""
    periods = sorted({r["period"] for r in rows if r["period"] is not None})
    names = sorted({r["deployment"] for r in rows})
    index = {(r["deployment"], r["period"]): r for r in rows}
    series = {
        key: {name: [(index.get((name, p)) or {}).get(key) or 0 for p in periods] for name in names}
        for key, _ in SERIES
    }
    return {"periods": periods, "deployments": names, "series": series, "labels": dict(SERIES)}


def usage_query(request: Request) -> dict[str, str]:
    query = request.query_params
    by = query.get("by", "hour")
    return {"since": query.get("since", "24h"), "by": by if by in ("hour", "day") else "hour",
            "deployment": query.get("deployment", "")}  # fmt: skip


def usage_routes(portal: Portal) -> list[Route]:
    reader = HealthReader()

    async def usage(request: Request, session: Session) -> Response:
        query = usage_query(request)
        async with portal.api(request, session) as api:
            report = await api.get("/management/usage", **query)
            deployments = (await api.get("/management/deployments"))["data"]
        rows = [r for r in report["data"] if r["period"] is not None]
        names = sorted({d["name"] for d in deployments} | {r["deployment"] for r in rows})
        return portal.render(request, "usage.html", session, query=query, rows=rows, total=report["total"],
                             chart=chart_data(rows), deployments=names, since_choices=SINCE_CHOICES)  # fmt: skip

    async def usage_csv(request: Request, session: Session) -> Response:
        async with portal.api(request, session) as api:
            text = await api.text("/management/usage", format="csv", **usage_query(request))
        headers = {"Content-Disposition": 'attachment; filename="llamafoundry-usage.csv"', "Cache-Control": "no-store"}
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)

    async def health(request: Request, session: Session) -> Response:
        async with portal.api(request, session) as api:
            lines = await _health(api, reader, session.principal.project is not None)
        return portal.fragment("_health.html", lines=lines, prefix=PREFIX)

    return [
        (f"{PREFIX}/usage", portal.page(usage, READ_USAGE), ["GET"]),
        (f"{PREFIX}/usage.csv", portal.page(usage_csv, READ_USAGE), ["GET"]),
        (f"{PREFIX}/health", portal.page(health, READ_USAGE), ["GET"]),
    ]


async def _health(api: ApiClient, reader: HealthReader, own_only: bool) -> list[Any]:
    """The health lines; with `own_only` (a project key) those of the deployments the key sees, nothing else of the
    server (`/metrics` names every deployment)."""
    metrics = await api.text("/metrics")
    deployments = (await api.get("/management/deployments"))["data"]
    urls = {d["name"]: [r["url"] for r in (d.get("status") or {}).get("replicas") or [] if r.get("url")]
            for d in deployments}  # fmt: skip
    lines = reader.read(metrics, await reader.replica_texts({k: v for k, v in urls.items() if v}))
    return [line for line in lines if line.name in urls] if own_only else lines
