"""`llamafoundry usage`: what each deployment was asked, how it answered, and what it would cost."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING

from llamafoundry.commands.common import console
from llamafoundry.commands.store_options import add_store_options, open_store

if TYPE_CHECKING:
    from llamafoundry.platform.usage import UsageRow


def register(commands: argparse._SubParsersAction) -> None:
    usage = commands.add_parser(
        "usage",
        help="requests, tokens, errors, latency and cost per deployment",
        description="Usage metered by `llamafoundry serve`, from the store (no running server needed).",
    )
    usage.add_argument("--deployment", help="only this deployment")
    usage.add_argument("--project", help="only this project's deployments")
    usage.add_argument("--since", help="from this date (2026-01-31, 2026-01-31T12:00, in UTC) or age (24h, 7d)")
    usage.add_argument("--by", choices=["hour", "day"], help="one row per hour or day (UTC)")
    usage.add_argument("--format", choices=["table", "csv", "json"], default="table")
    add_store_options(usage)
    usage.set_defaults(handler=_usage)


def _usage(args: argparse.Namespace) -> int:
    from llamafoundry.platform.projects import get_project
    from llamafoundry.platform.usage import parse_since, report, store_pricing, to_csv

    since = parse_since(args.since) if args.since else None
    with open_store(args) as store:
        project = get_project(store, args.project).name if args.project else None
        rows = report(store.engine, store_pricing(store, project), deployment=args.deployment, since=since, by=args.by,
                      project=project)  # fmt: skip
        if args.deployment and len(rows) == 1 and store.get_deployment(args.deployment.lower()) is None:
            raise ValueError(
                f"No deployment is called '{args.deployment}', and no usage is recorded under that name. "
                "`llamafoundry deploy list` shows the deployments; `llamafoundry usage` shows every name with usage."
            )
    if args.format == "csv":
        sys.stdout.write(to_csv(rows))
    elif args.format == "json":
        print(json.dumps({"data": [r.as_dict() for r in rows[:-1]], "total": rows[-1].as_dict()}, indent=2))
    else:
        _print_table(rows, args)
    return 0


def _print_table(rows: list[UsageRow], args: argparse.Namespace) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    title = (
        "Usage" + (f" of {args.deployment}" if args.deployment else "")
        + (f" in project {args.project}" if args.project else "") + (f" since {args.since}" if args.since else "")
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["deployment", "requests", "prompt tok", "output tok", "errors", "429s", "filtered", "p50 ms",
               "p95 ms", "cost $"]  # fmt: skip
    if args.by:
        columns.insert(1, args.by + " (UTC)")
    for column in columns:
        table.add_column(column, justify="left" if column == "deployment" or "UTC" in column else "right")
    for row in rows:
        d = row.as_dict()
        cells = [row.deployment, f"{row.requests:,}", f"{row.prompt_tokens:,}", f"{row.completion_tokens:,}",
                 str(row.errors), str(row.throttled), str(row.filtered), _ms(d["p50_latency_ms"]),
                 _ms(d["p95_latency_ms"]), _cost(row)]  # fmt: skip
        if args.by:
            cells.insert(1, _period(row.period, args.by))
        table.add_row(*cells, end_section=row is rows[-2] if len(rows) > 1 else False)
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # piped: never squeeze the columns
    if any(row.is_partly_priced for row in rows):
        console.print("* leaves out what has no price: the server's own model, a deleted deployment's compute.")
    if len(rows) == 1:
        console.print("No usage recorded yet: requests are metered by `llamafoundry serve`.")


def _period(start: float | None, by: str) -> str:
    from datetime import UTC, datetime

    if start is None:
        return ""
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:00" if by == "hour" else "%Y-%m-%d")


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _cost(row: UsageRow) -> str:
    """Dollars to 4 decimals, amounts under a tenth of a cent to 2 significant digits (a cost never reads
    0.0000); n/a: no price (the server's own model); * when the row leaves out what has no price."""
    value = row.cost
    if value is None:
        return "n/a"
    decimals = 4 if value == 0 or value >= 0.001 else 1 - math.floor(math.log10(value))
    return f"{value:,.{decimals}f}" + ("*" if row.is_partly_priced else "")
