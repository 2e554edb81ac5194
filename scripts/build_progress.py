"""Turn pip -v output of a CMake build into one progress line; print errors in full if the build fails."""

from __future__ import annotations

import re
import sys

STEP = re.compile(r"\[(\d+)/(\d+)\]")


def main() -> int:
    tail: list[str] = []
    for line in sys.stdin:
        tail = (tail + [line])[-60:]
        match = STEP.search(line)
        if match:
            done, total = int(match.group(1)), int(match.group(2))
            sys.stdout.write(f"\r  building llama.cpp: {done}/{total} ({100 * done // total}%)")
            sys.stdout.flush()
        elif line.startswith(("Successfully installed", "ERROR", "error:")):
            sys.stdout.write("\n" + line)
    sys.stdout.write("\n")
    if any(line.startswith("ERROR") for line in tail):
        sys.stdout.write("".join(tail))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
