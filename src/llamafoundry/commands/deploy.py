"""`llamafoundry deploy ...`: create, list, show and delete deployments and rotate their keys, on the store
directly (a running `serve` picks the changes up within two seconds)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamafoundry.commands import deploy_downloads
from llamafoundry.commands.common import console, print_error
from llamafoundry.commands.deploy_options import (
    add_content_safety_options,
    add_limit_options,
    add_sizing_options,
    check_guard,
    content_safety_changes,
    sizing_changes_from,
)
from llamafoundry.commands.runtime_view import print_runtime, runtime_entry
from llamafoundry.commands.store_options import add_store_options, home_of, open_store
from llamafoundry.platform.ratelimit import limit_settings

if TYPE_CHECKING:
    from llamafoundry.platform.deployments import DeploymentError


def register(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser("deploy", help="deployments of catalog models, and their keys")
    sub = deploy.add_subparsers(title="deploy commands")

    create = sub.add_parser("create", help="deploy a catalog model")
    create.add_argument("name", help="deployment name: its endpoint is /deployments/NAME")
    create.add_argument("--model", required=True, help="catalog model name (`llamafoundry models list`)")
    create.add_argument("--type", default="serverless", choices=["serverless", "managed"])
    create.add_argument("--weights", type=Path, help="local GGUF file (default: download the catalog's GGUF)")
    create.add_argument("--upstream", action="append", help="base URL of an OpenAI-compatible server already "
                        "running the model; repeat it (or separate URLs by commas) for a pool")  # fmt: skip
    create.add_argument("--upstream-model", help="model name the upstream serves (default: the catalog name)")
    create.add_argument("--upstream-key", help="key the upstream wants (stored in the data directory)")
    create.add_argument("--instances", type=int, help="managed compute: replicas of the model (default 1)")
    create.add_argument("--instance-type", help="managed compute: instance size (cores per replica)")
    create.add_argument("--shared-quota", action="store_true", help="managed compute: deleted after 168 hours")
    add_limit_options(create)
    add_content_safety_options(create)
    add_sizing_options(create)
    create.add_argument("--project", help="the project it belongs to (default: default)")
    create.add_argument("--wait", action="store_true", help="weights to download: follow the download with a "
                        "progress bar until the deployment is ready (default: return at once)")  # fmt: skip
    create.set_defaults(handler=_create, audit_action="deployment.create")

    update = sub.add_parser("update", help="change a deployment's rate limits, content safety or sizes")
    update.add_argument("name")
    add_limit_options(update)
    add_content_safety_options(update)
    add_sizing_options(update)
    update.add_argument("--instances", type=int, help="managed compute: replicas (the current ones answer until "
                        "the new set is ready)")  # fmt: skip
    update.add_argument("--upstream", action="append", help="an --upstream deployment's servers, all of them "
                        "(repeat it, or separate URLs by commas)")  # fmt: skip
    update.set_defaults(handler=_update, audit_action="deployment.update")

    listing = sub.add_parser("list", help="list deployments")
    listing.add_argument("--project", help="only this project's deployments")
    listing.set_defaults(handler=_list)

    show = sub.add_parser("show", help="show one deployment")
    show.add_argument("name")
    show.set_defaults(handler=_show)

    delete = sub.add_parser("delete", help="delete a deployment (its endpoint stops answering)")
    delete.add_argument("name")
    delete.set_defaults(handler=_delete, audit_action="deployment.delete")

    keys = sub.add_parser("keys", help="show a deployment's keys, or regenerate one")
    keys.add_argument("name")
    keys.add_argument("--regenerate", choices=["primary", "secondary"], help="replace this key (the other stays)")
    keys.add_argument("--value", help="with --regenerate: use this 32-character key instead of a generated one")
    keys.set_defaults(handler=_keys, audit_action="deployment.key.regenerate", audit_if="regenerate")

    admin = sub.add_parser("admin-key", help="the admin key of the /management API")
    admin.add_argument("--regenerate", action="store_true", help="create a new admin key (the old one stops working)")
    admin.set_defaults(handler=_admin_key, audit_action="admin_key.regenerate", audit_if="regenerate")

    deploy_downloads.register(sub)  # cancel, resume
    for parser in (create, update, listing, show, delete, keys, admin):
        add_store_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _create(args: argparse.Namespace) -> int:
    from llamafoundry.platform.deployments import DeploymentSpec, create_deployment, describe
    from llamafoundry.platform.downloads import get_job, status

    sizes = _run(lambda: sizing_changes_from(args))
    if sizes is None:
        return 1
    spec = DeploymentSpec(
        name=args.name,
        model=args.model,
        type=args.type,
        weights=args.weights,
        upstream_url=args.upstream,
        upstream_model=args.upstream_model,
        upstream_api_key=args.upstream_key,
        instances=args.instances,
        instance_type=args.instance_type,
        shared_quota=args.shared_quota,
        settings={**limit_settings(args.tpm, args.rpm), **content_safety_changes(args, None), **sizes},
        project=args.project or "default",
    )
    with open_store(args) as store:
        check_guard(store, args.content_safety_guard)
        created = _run(lambda: create_deployment(store, spec, home_of(args)))
        if created is None:
            return 1
        deployment, keys = created
        job = get_job(store, deployment.name)  # weights to download: returned at once, `status` downloading
        body = {**describe(deployment), "primary_key": keys.primary, "secondary_key": keys.secondary}
        if job is not None:
            body["status"] = status(job)
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            _print_fields({k: v for k, v in body.items() if k != "status"})
            console.print(
                "The keys are shown only now; `llamafoundry deploy keys "
                f"{deployment.name} --regenerate primary` replaces a lost one.\n"
                f"Endpoint: http://HOST:PORT/deployments/{deployment.name} (served by `llamafoundry serve`)",
                soft_wrap=True,
            )
            if job is not None and not args.wait:
                deploy_downloads.print_queued(deployment.name, store)
        if job is not None and args.wait:
            return deploy_downloads.wait_until_ready(store, deployment.name, home_of(args))
    return 0


def _update(args: argparse.Namespace) -> int:
    from llamafoundry.platform.content_safety import SETTING_CONTENT_SAFETY
    from llamafoundry.platform.deployments import describe, get_deployment, scale, set_upstream, update_settings

    changes = limit_settings(args.tpm, args.rpm)
    with open_store(args) as store:
        deployment = _run(lambda: get_deployment(store, args.name))
        if deployment is None:
            return 1
        check_guard(store, args.content_safety_guard)
        changes.update(content_safety_changes(args, deployment.settings.get(SETTING_CONTENT_SAFETY)))
        sizes = _run(lambda: sizing_changes_from(args))
        if sizes is None:
            return 1
        changes.update(sizes)
        if not changes and args.instances is None and not args.upstream:
            console.print("[red]error:[/red] nothing to change: give --tpm N, --rpm N, --content-safety*, sizing "
                          "options (--ctx-size, --parallel, ...), --instances N or --upstream URL.")  # fmt: skip
            return 2
        if args.instances is not None and _run(lambda: scale(store, args.name.lower(), args.instances)) is None:
            return 1
        if args.upstream and _run(lambda: set_upstream(store, args.name.lower(), args.upstream)) is None:
            return 1
        updated = _run(lambda: update_settings(store, args.name.lower(), changes))
        if updated is None:
            return 1
        body = describe(updated)
    print(json.dumps(body, indent=2)) if args.json else _print_fields(body)
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from llamafoundry.platform.deployments import describe, list_deployments

    with open_store(args) as store:
        found = [describe(d) for d in list_deployments(store) if args.project in (None, d.project)]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    table = Table(title=f"Deployments ({len(found)})")
    for column in ("name", "project", "model", "type", "serves from", "instances", "created", "expires"):
        table.add_column(column)
    for d in found:
        where = d.get("upstream") or d.get("weights") or ""
        table.add_row(d["name"], d["project"], d["model"], d["type"], where if isinstance(where, str) else
                      ", ".join(where), str(d.get("instances", "-")),
                      d["created_at"], d.get("expires_at", "-"))  # fmt: skip
    _stdout().print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    from llamafoundry.platform.deployments import describe, get_deployment
    from llamafoundry.platform.downloads import get_job, status
    from llamafoundry.platform.store import iso_time

    with open_store(args) as store:
        deployment = _run(lambda: get_deployment(store, args.name))
        if deployment is None:
            return 1
        store.delete_expired()
        keys = store.keys(deployment.name)
        reports = store.runtime(deployment.name)
        job = get_job(store, deployment.name)
    body = describe(deployment)
    if job is not None:  # the download's own record: there with no server running too
        body["status"] = status(job)
    body["keys"] = {k.slot: {"id": k.key_id, "created_at": iso_time(k.created_at)} for k in keys}
    body["runtime"] = [runtime_entry(r) for r in reports]
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    _print_fields({k: v for k, v in body.items() if k not in ("runtime", "status")})
    for line in deploy_downloads.download_lines(job) if job is not None else []:
        console.print(line, soft_wrap=True, highlight=False)
    print_runtime(body["runtime"])
    if deployment.expires_at is not None:
        console.print(f"Shared quota: this deployment is deleted automatically at {body['expires_at']} "
                      f"(in {body['expires_in_hours']} hours).", soft_wrap=True)  # fmt: skip
    return 0


def _delete(args: argparse.Namespace) -> int:
    from llamafoundry.platform.deployments import delete_deployment

    with open_store(args) as store:
        if not _succeeds(lambda: delete_deployment(store, args.name)):
            return 1
    console.print(f"Deleted deployment {args.name.lower()}.")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from llamafoundry.platform.deployments import get_deployment, regenerate_key
    from llamafoundry.platform.store import iso_time

    with open_store(args) as store:
        if args.regenerate is None:
            if args.value is not None:
                console.print("[red]error:[/red] --value needs --regenerate primary|secondary.")
                return 2
            deployment = _run(lambda: get_deployment(store, args.name))
            if deployment is None:
                return 1
            keys = store.keys(deployment.name)
            body = {k.slot: {"id": k.key_id, "created_at": iso_time(k.created_at)} for k in keys}
            print(json.dumps(body, indent=2)) if args.json else _print_fields(body)
            if not args.json:
                console.print(
                    "Keys are stored hashed and shown only when created or regenerated; `llamafoundry deploy "
                    f"keys {args.name} --regenerate primary|secondary` makes a new one."
                )
            return 0
        key = _run(lambda: regenerate_key(store, args.name, args.regenerate, args.value))
    if key is None:
        return 1
    if args.json:
        print(json.dumps({f"{args.regenerate}_key": key}))
    else:
        print(f"{args.regenerate} key: {key}")
        other = "secondary" if args.regenerate == "primary" else "primary"
        console.print(f"The old {args.regenerate} key stopped working; the {other} key still works.")
    return 0


def _admin_key(args: argparse.Namespace) -> int:
    from llamafoundry.platform.deployments import regenerate_admin_key
    from llamafoundry.platform.store import iso_time

    with open_store(args) as store:
        if args.regenerate:
            key = regenerate_admin_key(store)
            print(json.dumps({"admin_key": key}) if args.json else f"admin key: {key}")
            console.print("Send it as `api-key` (or `Authorization: Bearer`) to /management/...; the old one "
                          "stopped working.")  # fmt: skip
            return 0
        stored = store.admin_key()
    if stored is None:
        console.print("No admin key yet: `llamafoundry deploy admin-key --regenerate` creates one (so does the "
                      "first `llamafoundry serve`).")  # fmt: skip
        return 1
    body = {"id": stored.key_id, "created_at": iso_time(stored.created_at)}
    print(json.dumps(body) if args.json else f"admin key {body['id']}, created {body['created_at']}")
    return 0


def _run(action: Any) -> Any:
    """Run a platform action; print a DeploymentError's sentence and return None instead of raising."""
    from llamafoundry.platform.deployments import DeploymentError

    try:
        return action()
    except DeploymentError as exc:
        _print_error(exc)
        return None


def _succeeds(action: Callable[[], None]) -> bool:
    """Run a platform action that returns nothing (so `_run`'s None cannot tell failure apart); print a
    DeploymentError's sentence and return False instead of raising."""
    from llamafoundry.platform.deployments import DeploymentError

    try:
        action()
    except DeploymentError as exc:
        _print_error(exc)
        return False
    return True


def _print_error(exc: DeploymentError) -> None:
    print_error(exc.message)


def _print_fields(body: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in body.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(f"[bold]{key}[/bold]", str(value))
    _stdout().print(table)


def _stdout() -> Any:
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)

