"""What every command module shares."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)  # messages go to stderr; command results (tables, JSON) to stdout
