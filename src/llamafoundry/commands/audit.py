"""`llamafoundry audit`: the audit log of management actions (API and CLI), with filters; and `record_command`,
which `cli.main` calls after every command that changes the store (those registered with an `audit_action`)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from llamafoundry.commands.store_options import add_store_options, open_store

# CLI arguments that are no details (the parser's own), and those holding a secret (noted as "set", never copied)
_INTERNAL_ARGS = {"handler", "audit_action", "audit_if", "json", "data_dir", "database_url", "create", "config"}
_SECRET_ARGS = {"value": "keyValue", "upstream_key": "upstream_key", "webhook": "webhook"}


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser(
        "audit",
        help="who changed what: the management actions of the API and the CLI",
        description="The audit log, newest first, from the store (no running server needed).",
    )
    audit.add_argument("--since", help="from this date (2026-01-31, in UTC) or age (24h, 7d)")
    audit.add_argument("--actor", help="only this key id (key-...), or cli:USER")
    audit.add_argument("--action", help="only actions starting with this (deployment, project.key, ...)")
    audit.add_argument("--project", help="only this project's")
    audit.add_argument("--target", help="only this target (a deployment, project/key, ...)")
    audit.add_argument("--limit", type=int, default=100, help="at most this many entries (default 100)")
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_store_options(audit)
    audit.set_defaults(handler=_audit)


def _audit(args: argparse.Namespace) -> int:
    from llamafoundry.platform import audit
    from llamafoundry.platform.usage import parse_since

    since = parse_since(args.since) if args.since else None
    if not 1 <= args.limit <= audit.MAX_ENTRIES:
        raise ValueError(f"--limit must be from 1 to {audit.MAX_ENTRIES}.")
    with open_store(args) as store:
        entries = audit.query(store, since=since, actor=args.actor, action=args.action, target=args.target,
                              project=args.project.lower() if args.project else None, limit=args.limit)  # fmt: skip
    bodies = [entry.describe() for entry in entries]
    if args.json:
        print(json.dumps({"data": bodies}, indent=2))
        return 0
    _print_table(bodies)
    return 0


def _print_table(bodies: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Audit log ({len(bodies)} entries, newest first)", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("at (UTC)", "actor", "action", "target", "project", "result", "details"):
        table.add_column(column)
    for body in bodies:
        details = ", ".join(f"{k}={v}" for k, v in body["details"].items())
        result = body["result"] if body["status"] < 400 else f"{body['status']}: {body['result']}"
        table.add_row(body["at"], body["actor"], body["action"], body["target"] or "", body["project"] or "",
                      result, details)  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def record_command(args: argparse.Namespace, code: int, error: str | None) -> None:
    """Record a command that changes the store (its parser set `audit_action`). A command with `audit_if` is
    recorded only when that argument is set (`deploy keys --regenerate`, not a listing)."""
    action = getattr(args, "audit_action", None)
    condition = getattr(args, "audit_if", None)
    if action is None or (condition is not None and not getattr(args, condition, None)):
        return
    from llamafoundry.platform import audit

    values = {name: value for name, value in vars(args).items()
              if name not in _INTERNAL_ARGS and value not in (None, False)}  # fmt: skip
    for name, renamed in _SECRET_ARGS.items():
        if name in values:
            values[renamed] = values.pop(name)  # audit.SECRET_FIELDS: written as "set"
    details = {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in values.items()}
    target = _target(action, values)
    project = values.get("project") or (values.get("name") if action.startswith("project.") else None)
    try:
        with open_store(args) as store:
            if project is None and action.startswith("deployment.") and target:
                found = store.get_deployment(target.lower())  # gone after a delete: then unknown
                project = found.project if found is not None else ("default" if action.endswith("create") else None)
            audit.record(store, audit.AuditEntry(
                actor=f"cli:{_user()}", actor_type="cli", action=action, status=200 if code == 0 else 400,
                result="ok" if code == 0 else (error or f"failed (exit status {code})"),
                target=target, project=str(project).lower() if project else None, details=details,
            ))  # fmt: skip
    except Exception as exc:  # the store could not be opened (the command's own error said why)
        if code == 0:
            print(f"warning: the audit log could not be written: {exc}", file=sys.stderr)


def _target(action: str, values: dict[str, Any]) -> str | None:
    """A deployment's name, or `project[/key]` (the names of the API's path parameters)."""
    if action.startswith("deployment."):
        return str(values.get("name") or values.get("deployment") or "") or None
    parts = [str(values[name]) for name in ("project", "name", "key") if values.get(name)]
    return "/".join(dict.fromkeys(parts)) or None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name (a container with an unknown uid)
        return "unknown"
