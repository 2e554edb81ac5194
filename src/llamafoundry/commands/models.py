"""`llamafoundry models ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamafoundry.commands.common import console


def register(commands: argparse._SubParsersAction) -> None:
    _add_models(commands)


def _add_models(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="model files").add_subparsers(title="models commands")
    build = models.add_parser("build-random", help="write a Llama-architecture GGUF with random weights")
    build.add_argument("out", type=Path)
    build.add_argument("--preset", default="tiny", choices=["tiny", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"])
    build.add_argument("--quant", default="F16", choices=["Q4_K_M", "Q8_0", "F16"])
    build.add_argument("--tokenizer", type=Path, default=None, help="GGUF whose tokenizer to copy")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(handler=_build_random)

    listing = models.add_parser("list", help="the model catalog (the Llama family as Azure lists it)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_list_catalog)
    show = models.add_parser("show", help="one catalog model: modalities, deployment types, prices, weights")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(handler=_show_catalog_model)


def _list_catalog(args: argparse.Namespace) -> int:
    from llamafoundry.commands.catalog_view import print_catalog

    return print_catalog(as_json=args.json)


def _show_catalog_model(args: argparse.Namespace) -> int:
    from llamafoundry.commands.catalog_view import print_model

    return print_model(args.name, as_json=args.json)


def _build_random(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

    from llamafoundry.model.gguf_builder import build_random_gguf

    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        out = build_random_gguf(
            args.out, preset=args.preset, quant=args.quant, tokenizer=args.tokenizer, seed=args.seed, progress=progress
        )
    size_mib = out.stat().st_size / 2**20
    print(f"{out} ({args.preset}, {args.quant}, {size_mib:.1f} MiB)")
    return 0
