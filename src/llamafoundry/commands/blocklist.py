"""`llamafoundry blocklist ...`: a deployment's custom blocklists (exact terms and RE2 regular expressions), on the
store directly, like `deploy` (a running `serve` applies a change to the next request after its store poll)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from llamafoundry.commands.common import console
from llamafoundry.commands.store_options import add_store_options, open_store


def register(commands: argparse._SubParsersAction) -> None:
    blocklist = commands.add_parser("blocklist", help="custom blocklists of a deployment's content filter")
    sub = blocklist.add_subparsers(title="blocklist commands")

    add = sub.add_parser("add", help="add terms (or --regex patterns) to a list; the list is created if needed",
                         description="A prompt or completion that matches an item of any list is blocked with the "
                         "content filter's 400 (or finish_reason content_filter) and reported under "
                         "custom_blocklists with the list's name.")  # fmt: skip
    add.add_argument("deployment")
    add.add_argument("list", help="the list's name (0-9, A-Z, a-z, '-', '.', '_', '~')")
    add.add_argument("items", nargs="+", metavar="ITEM", help="exact terms (whole words, any case), or patterns")
    add.add_argument("--regex", action="store_true", help="the items are RE2 regular expressions")
    add.add_argument("--description", help="what the list is for")
    add.set_defaults(handler=_add, audit_action="deployment.blocklist.put")

    remove = sub.add_parser("remove", help="remove items from a list, or the whole list when no item is named")
    remove.add_argument("deployment")
    remove.add_argument("list")
    remove.add_argument("items", nargs="*", metavar="ITEM")
    remove.set_defaults(handler=_remove, audit_action="deployment.blocklist.delete")

    show = sub.add_parser("show", help="a deployment's blocklists")
    show.add_argument("deployment")
    show.add_argument("--json", action="store_true", help="print the deployment's lists as JSON")
    show.set_defaults(handler=_show)
    for parser in (add, remove):
        parser.add_argument("--json", action="store_true", help="print the deployment's lists as JSON")
    for parser in (add, remove, show):
        add_store_options(parser)


def _add(args: argparse.Namespace) -> int:
    from llamafoundry.platform.content_safety import add_blocklist_items
    from llamafoundry.safety.blocklists import BlocklistItem

    items = [BlocklistItem(i, args.regex) for i in args.items]
    return _change(args, lambda settings: add_blocklist_items(settings, args.list, items, args.description))


def _remove(args: argparse.Namespace) -> int:
    from llamafoundry.platform.content_safety import remove_blocklist_items

    return _change(args, lambda settings: remove_blocklist_items(settings, args.list, args.items))


def _change(args: argparse.Namespace, change: Any) -> int:
    from llamafoundry.platform.content_safety import deployment_policy, stored_blocklists

    with open_store(args) as store:
        deployment = _deployment(store, args.deployment)
        if deployment is None:
            return 1
        updated = store.update_settings(deployment.name, change(deployment.settings))
        lists = stored_blocklists(updated.settings)
        policy_on = deployment_policy(updated.type, updated.settings).enabled
    if args.json:
        print(json.dumps({"data": [b.to_dict() for b in lists]}, indent=2))
    else:
        _print_lists(updated.name, lists)
    if lists and not policy_on:
        console.print(f"[yellow]note:[/yellow] the content filter of {updated.name} is off, so its blocklists do not "
                      f"apply yet: llamafoundry deploy update {updated.name} --content-safety on")  # fmt: skip
    return 0


def _show(args: argparse.Namespace) -> int:
    from llamafoundry.platform.content_safety import stored_blocklists

    with open_store(args) as store:
        deployment = _deployment(store, args.deployment)
        if deployment is None:
            return 1
        lists = stored_blocklists(deployment.settings)
    if args.json:
        print(json.dumps({"data": [b.to_dict() for b in lists]}, indent=2))
    else:
        _print_lists(deployment.name, lists)
    return 0


def _deployment(store: Any, name: str) -> Any:
    found = store.get_deployment(name.lower())
    if found is None:
        console.print(f"[red]error:[/red] no deployment named {name}: `llamafoundry deploy list` shows them.")
    return found


def _print_lists(deployment: str, lists: list[Any]) -> None:
    if not lists:
        print(f"{deployment}: no blocklists")
    for blocklist in lists:
        about = f" ({blocklist.description})" if blocklist.description else ""
        print(f"{deployment}: {blocklist.id}{about}: {len(blocklist.items)} item(s)")
        for item in blocklist.items:
            print(f"  {'regex' if item.is_regex else 'term '}  {item.pattern}")
