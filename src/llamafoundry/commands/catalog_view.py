"""How `models list` and `models show` print the catalog (a rich table, or JSON)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from llamafoundry.commands.common import console
from llamafoundry.platform.catalog import CATALOG, UnknownModelError, find_model
from llamafoundry.platform.deployments import describe_model as model_body


def print_catalog(as_json: bool = False) -> int:
    if as_json:
        print(json.dumps([model_body(m) for m in CATALOG], indent=2))
        return 0
    table = Table(title="Model catalog: Meta Llama")
    for column in ("model", "context", "input", "tools", "deployment types", "preview", "$/1k in", "$/1k out"):
        table.add_column(column, no_wrap=column == "model")
    for m in CATALOG:
        table.add_row(
            m.name,
            _context(m.context_length),
            ", ".join(m.input_modalities),
            "yes" if m.supports_tools else "no",
            ", ".join(m.deployment_types),
            "preview" if m.is_preview else "",
            _price(m.input_price_per_1k),
            _price(m.output_price_per_1k),
        )
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def print_model(name: str, as_json: bool = False) -> int:
    try:
        model = find_model(name)
    except UnknownModelError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        return 1
    body = model_body(model)
    if as_json:
        print(json.dumps(body, indent=2))
        return 0
    table = Table(show_header=False, box=None)
    for key, value in body.items():
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, dict):
            value = f"{value['url']} (downloaded by `deploy create` without --weights)"
        elif value is None and key == "weights":
            value = "no llama.cpp build: deploy it with --upstream URL"
        elif value is None:
            value = "managed compute only (billed by core-hours)"
        table.add_row(f"[bold]{key}[/bold]", str(value))
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def _context(tokens: int) -> str:
    return f"{tokens // 2**20}M" if tokens >= 2**20 else f"{tokens // 1024}K"


def _price(value: float | None) -> str:
    return f"{value:.5f}" if value is not None else "-"
