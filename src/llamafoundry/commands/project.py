"""`llamafoundry project ...`: projects, their keys, token grants and budgets, on the store directly (a running
`serve` picks changes up within two seconds). The management API offers the same under `/management/projects`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from llamafoundry.commands.common import console
from llamafoundry.commands.deploy import _print_fields, _run, _stdout, _succeeds
from llamafoundry.commands.store_options import add_store_options, open_store


def register(commands: argparse._SubParsersAction) -> None:
    project = commands.add_parser("project", help="projects: their deployments, keys, token grants and budgets")
    sub = project.add_subparsers(title="project commands")
    parsers = []

    create = sub.add_parser("create", help="create a project")
    create.add_argument("name", help="3 to 32 letters, digits and hyphens")
    create.add_argument("--description", help="what the project is for")
    create.set_defaults(handler=_create, audit_action="project.create")
    listing = sub.add_parser("list", help="the projects and their deployments")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="a project: deployments, keys, grants, budgets, this month's usage")
    show.add_argument("name")
    show.set_defaults(handler=_show)
    delete = sub.add_parser("delete", help="delete an empty project (with its keys, grants and budgets)")
    delete.add_argument("name")
    delete.set_defaults(handler=_delete, audit_action="project.delete")
    parsers += [create, listing, show, delete]

    grant = sub.add_parser("grant", help="let Entra ID tokens of a subject, group or app role use the project's "
                           "managed deployments")  # fmt: skip
    grant.add_argument("name", metavar="project")
    _principal_options(grant)
    grant.add_argument("--deployments", help="comma-separated: only these deployments (default: all)")
    grant.set_defaults(handler=_grant, audit_action="project.grant")
    revoke = sub.add_parser("revoke-grant", help="remove a grant")
    revoke.add_argument("name", metavar="project")
    _principal_options(revoke)
    revoke.set_defaults(handler=_revoke_grant, audit_action="project.grant.revoke")
    parsers += [grant, revoke]

    parsers += _register_keys(sub.add_parser("key", help="the project's keys").add_subparsers(title="key commands"))
    budget = sub.add_parser("budget", help="spend budgets (USD per day or month) of the project or of a key")
    parsers += _register_budgets(budget.add_subparsers(title="budget commands"))
    for parser in parsers:
        add_store_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _principal_options(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", help="a user's or service principal's object id (the token's oid, else sub)")
    who.add_argument("--group", help="a group's object id (the token's groups claim)")
    who.add_argument("--app-role", help="an app role's name (the token's roles claim)")
    who.add_argument("--any", action="store_true", help="every token of the configured issuer")


def _register_keys(sub: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    create = sub.add_parser("create", help="a new key (shown once)")
    create.add_argument("project")
    create.add_argument("name", help="the key's name, such as ci or alice")
    create.add_argument("--deployments", help="comma-separated: only these deployments (default: all, also later ones)")
    create.add_argument("--tpm", type=int, help="the key's own tokens per minute (default: none; the deployment's "
                        "limits apply too)")  # fmt: skip
    create.add_argument("--rpm", type=int, help="the key's own requests per minute (default: none)")
    create.add_argument("--expires", help="an age such as 30d or 12h, or a date (default: never)")
    create.set_defaults(handler=_key_create, audit_action="project.key.create")
    listing = sub.add_parser("list", help="the project's keys (ids and names, never the keys)")
    listing.add_argument("project")
    listing.set_defaults(handler=_key_list)
    revoke = sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("project")
    revoke.add_argument("key", help="the key's name or id")
    revoke.set_defaults(handler=_key_revoke, audit_action="project.key.revoke")
    return [create, listing, revoke]


def _register_budgets(sub: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    setter = sub.add_parser("set", help="set the budget of the project (or of one of its keys)")
    setter.add_argument("project")
    setter.add_argument("--usd", type=float, required=True, help="the budget in US dollars")
    setter.add_argument("--period", choices=["day", "month"], default="month", help="per UTC day or month")
    setter.add_argument("--key", help="a key's name or id: the key's own budget (default: the whole project's)")
    setter.add_argument("--webhook", help="URL that gets a POST of JSON when 80 %% and 100 %% are spent")
    setter.set_defaults(handler=_budget_set, audit_action="project.budget.set")
    remove = sub.add_parser("remove", help="remove a budget")
    remove.add_argument("project")
    remove.add_argument("--period", choices=["day", "month"], default="month")
    remove.add_argument("--key", help="a key's name or id")
    remove.set_defaults(handler=_budget_remove, audit_action="project.budget.remove")
    listing = sub.add_parser("list", help="the budgets and what is spent of them")
    listing.add_argument("project")
    listing.set_defaults(handler=_budget_list)
    return [setter, remove, listing]


def _output(args: argparse.Namespace, body: Any, message: str | None = None) -> int:
    if args.json:
        print(json.dumps(body, indent=2))
    elif isinstance(body, list):
        _print_rows(body)
    else:
        _print_fields(body)
    if message and not args.json:
        console.print(message, soft_wrap=True, highlight=False)
    return 0


def _print_rows(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table()
    columns = list(rows[0]) if rows else ["(none)"]
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in row.values()])
    _stdout().print(table)


def _names(text: str | None) -> list[str] | None:
    return [name for name in text.split(",")] if text is not None else None


def _create(args: argparse.Namespace) -> int:
    from llamafoundry.platform.project_view import project_body
    from llamafoundry.platform.projects import create_project

    with open_store(args) as store:
        created = _run(lambda: create_project(store, args.name, args.description))
        if created is None:
            return 1
        body = project_body(store, created.name)
    hint = f"Deploy into it with `llamafoundry deploy create NAME --model M --project {body['name']}`."
    return _output(args, body, hint)


def _list(args: argparse.Namespace) -> int:
    from llamafoundry.platform.project_view import project_body
    from llamafoundry.platform.projects import list_projects

    with open_store(args) as store:
        bodies = [project_body(store, project.name) for project in list_projects(store)]
    return _output(args, bodies)


def _show(args: argparse.Namespace) -> int:
    from llamafoundry.platform.project_view import project_body

    with open_store(args) as store:
        body = _run(lambda: project_body(store, args.name, True))
    return 1 if body is None else _output(args, body)


def _delete(args: argparse.Namespace) -> int:
    from llamafoundry.platform.projects import delete_project

    with open_store(args) as store:
        if not _succeeds(lambda: delete_project(store, args.name)):
            return 1
    console.print(f"Deleted project {args.name.lower()}.")
    return 0


def _principal(args: argparse.Namespace) -> tuple[str, str]:
    if args.any:
        return "any", "*"
    for kind in ("subject", "group", "app_role"):
        if getattr(args, kind):
            return kind, getattr(args, kind)
    raise ValueError("Give --subject, --group, --app-role or --any.")


def _grant(args: argparse.Namespace) -> int:
    from llamafoundry.platform.projects import add_grant

    kind, value = _principal(args)
    with open_store(args) as store:
        grant = _run(lambda: add_grant(store, args.name, kind, value, _names(args.deployments)))
    if grant is None:
        return 1
    return _output(args, grant.describe(), "Tokens must also come from the server's --token-issuer, for its "
                   "--token-audience, and open managed-compute deployments only.")  # fmt: skip


def _revoke_grant(args: argparse.Namespace) -> int:
    from llamafoundry.platform.projects import remove_grant

    kind, value = _principal(args)
    with open_store(args) as store:
        if not _succeeds(lambda: remove_grant(store, args.name, kind, value)):
            return 1
    console.print(f"Removed the grant of project {args.name.lower()} to {kind} {value}.")
    return 0


def _key_create(args: argparse.Namespace) -> int:
    from llamafoundry.platform.project_keys import create_key

    with open_store(args) as store:
        made = _run(lambda: create_key(store, args.project, args.name, _names(args.deployments),
                                       tokens_per_minute=args.tpm, requests_per_minute=args.rpm,
                                       expires=args.expires))  # fmt: skip
    if made is None:
        return 1
    key, secret = made
    return _output(args, {**key.describe(), "key": secret}, "The key is shown only now (it is stored hashed); "
                   f"`llamafoundry project key revoke {key.project} {key.name}` stops it.")  # fmt: skip


def _key_list(args: argparse.Namespace) -> int:
    from llamafoundry.platform.project_keys import list_keys

    with open_store(args) as store:
        found = _run(lambda: list_keys(store, args.project))
    return 1 if found is None else _output(args, [key.describe() for key in found])


def _key_revoke(args: argparse.Namespace) -> int:
    from llamafoundry.platform.project_keys import revoke_key

    with open_store(args) as store:
        key = _run(lambda: revoke_key(store, args.project, args.key))
    return 1 if key is None else _output(args, key.describe(), "Running servers refuse it within two seconds.")


def _budget_set(args: argparse.Namespace) -> int:
    from llamafoundry.platform.budgets import set_budget

    with open_store(args) as store:
        budget = _run(lambda: set_budget(store, args.project, args.period, args.usd, key=args.key,
                                         webhook_url=args.webhook))  # fmt: skip
    return 1 if budget is None else _output(args, budget.describe())


def _budget_remove(args: argparse.Namespace) -> int:
    from llamafoundry.platform.budgets import remove_budget

    with open_store(args) as store:
        if not _succeeds(lambda: remove_budget(store, args.project, args.period, args.key)):
            return 1
    console.print(f"Removed the {args.period} budget of {args.key or 'project ' + args.project}.")
    return 0


def _budget_list(args: argparse.Namespace) -> int:
    from llamafoundry.platform.project_view import budget_bodies
    from llamafoundry.platform.projects import get_project

    with open_store(args) as store:
        project = _run(lambda: get_project(store, args.project))
        bodies = budget_bodies(store, project.name) if project is not None else None
    return 1 if bodies is None else _output(args, bodies)
