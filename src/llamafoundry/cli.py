"""`llamafoundry` command line: parse, call, print.

Every module in `llamafoundry.commands` adds its subcommands through `register(commands)`; this file only
builds the parser and runs the chosen handler.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from rich.console import Console
from rich.markup import escape

from llamafoundry import __version__, commands
from llamafoundry.commands import common
from llamafoundry.commands.audit import record_command
from llamafoundry.platform.errors import DeploymentError

console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    common.errors.clear()
    code, error = 1, None
    try:
        code = int(args.handler(args) or 0)
    except BrokenPipeError:  # `llamafoundry usage --format json | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        code = 0
    except (ValueError, FileNotFoundError, DeploymentError) as exc:
        # one line, as written: a sentence holds paths and URLs to copy (never cut by a wrap) and brackets that
        # are not markup
        console.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True, highlight=False)
        code, error = 2, str(exc)
    except KeyboardInterrupt:
        code = 130
    record_command(args, code, error or (common.errors[-1] if common.errors else None))  # changes: the audit log
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamafoundry", description="Serve Meta Llama models (GGUF) locally.")
    parser.add_argument("--version", action="version", version=f"llamafoundry {__version__}")
    subparsers = parser.add_subparsers(title="commands")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):  # helpers such as commands.common have none
            module.register(subparsers)
    return parser


if __name__ == "__main__":
    sys.exit(main())
