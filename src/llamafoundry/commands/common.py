"""What every command module shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

console = Console(stderr=True)  # messages go to stderr; command results (tables, JSON) to stdout
errors: list[str] = []  # the sentences a command printed as errors (the audit log's result of a refused change)


def print_error(message: str) -> None:
    """Print a refused action's sentence (and keep it for the audit log)."""
    errors.append(message)
    console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)


@contextmanager
def download_bar(what: str = "weights") -> Iterator[Any]:
    """A progress callback for weight downloads (`platform.hub.Progress`): shows a bar only once a download
    starts (nothing for a file already downloaded)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bar = Progress(TextColumn(f"downloading {what}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=console)  # fmt: skip
    task: list[Any] = []

    def progress(done: int, total: int | None) -> None:
        if not task:
            bar.start()
            task.append(bar.add_task("download", total=total))
        bar.update(task[0], completed=done, total=total)

    try:
        yield progress
    finally:
        if task:
            bar.stop()
