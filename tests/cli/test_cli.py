"""The command line as a shell uses it."""

from __future__ import annotations

import subprocess
import sys


def test_output_piped_into_a_reader_that_stops_early_is_no_error() -> None:
    """`llamafoundry safety check ... | head -1` printed a BrokenPipeError traceback."""
    command = f"{sys.executable} -m llamafoundry safety check 'Hello there, how are you?' | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "{", done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
