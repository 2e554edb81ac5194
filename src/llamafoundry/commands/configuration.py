"""`llamafoundry config show`: every setting in effect, and where each came from."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llamafoundry.commands.common import console
from llamafoundry.commands.serve_options import DEFAULT_MAX_CTX, serve_parser, serve_settings
from llamafoundry.settings import Resolved, ServeOptions, default_config_file, default_data_dir, display, env_name
from llamafoundry.settings import flag_name as flag_of
from llamafoundry.settings import masked as masked_value

# What an unset setting means, where "nothing" is not the whole story.
UNSET_MEANS = {
    "data_dir": f"{default_data_dir()} (made on first use)",
    "database_url": "SQLite in the data directory",
    "model": "the embedded demo model",
    "name": "the catalog name, else the file's",
    "provider": "Meta (the demo model: llamafoundry)",
    "api_key": "generated at start",
    "ctx_size": f"the model's own, at most {DEFAULT_MAX_CTX}",
    "threads": "all cores",
    "tpm": "200000 (serverless default)",
    "rpm": "1000 (serverless default)",
    "token_audience": "https://ml.azure.com",
}


def register(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser("config", help="the settings in effect (flags, LLAMAFOUNDRY_* variables, config file)")
    sub = config.add_subparsers(title="config commands")
    show = serve_parser(sub, "show", help="print every setting's value and where it came from",
                        description="The settings `llamafoundry serve` would run with, given the same options, "
                        "environment and config file. Secrets are masked.")  # fmt: skip
    show.add_argument("--json", action="store_true", default=False, help="print JSON instead of a table")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    resolved = serve_settings(args)
    rows = [_row(resolved, name) for name in ServeOptions.model_fields]
    config_file = str(resolved.config_file) if resolved.config_file else None
    if args.json:
        config_source = resolved.config_origin.where if resolved.config_origin else None
        body = {"config_file": config_file, "config_file_from": config_source or ("default" if config_file else None),
                "settings": {row.pop("name"): row for row in rows}}  # fmt: skip
        print(json.dumps(body, indent=2))
        return 0
    _print_table(rows)
    if config_file is None:
        console.print(f"No config file ({default_config_file()} does not exist; --config FILE or "
                      "$LLAMAFOUNDRY_CONFIG names one).", soft_wrap=True, highlight=False)  # fmt: skip
    else:
        how = resolved.config_origin.where if resolved.config_origin and resolved.config_origin.where else "default"
        console.print(f"Config file: {config_file} (from {how})", soft_wrap=True, highlight=False)
    return 0


def _row(resolved: Resolved[ServeOptions], name: str) -> dict[str, Any]:
    """One setting: its value (masked), where it came from, and the flag and variable that set it."""
    origin = resolved.origin(name)
    value = masked_value(name, getattr(resolved.values, name))
    if isinstance(value, list):
        value = [str(v) for v in value]
    elif value is not None and not isinstance(value, bool | int | float | str):
        value = str(value)
    row: dict[str, Any] = {"name": name, "value": value, "source": origin.kind}
    if origin.where:
        row["from"] = origin.where
    if value is None and name in UNSET_MEANS:
        row["means"] = UNSET_MEANS[name]
    row.update(flag=flag_of(name), env=env_name(name))
    return row


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for row in rows:
        value = row["value"]
        shown = escape(display(value)) if value not in (None, []) else f"[dim]not set: {row.get('means', '-')}[/dim]"
        source = row["source"] if row["source"] == "default" else f"{row['source']} {row['from']}"
        table.add_row(row["name"], shown, source)
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 1000).print(table)  # piped: never wrap a cell
