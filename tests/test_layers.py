"""The layering contract in pyproject.toml ([tool.importlinter]): imports go one way (cli -> commands -> api ->
platform -> protocol | safety -> service -> engine -> model -> leaves), HTTP stays in api/ and the platform's
upstream client, and the API reaches engines only through a backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_keep_the_layers() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
