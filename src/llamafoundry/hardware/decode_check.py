"""Decode a few tokens with the installed llama.cpp in a child process.

A llama.cpp build that executes an instruction this CPU cannot run, or a model file that passes the loader and
crashes the kernels, kills its process with a signal. Doing the first decode in a child turns that into a sentence
for the user (which signal, the likely cause, the fix) instead of a server that dies on its first request.

The child decodes a 32-token prompt in one batch (the matrix-matrix kernels, where AMX and VNNI code runs) and then
one token (the matrix-vector kernels). It needs only `llama_cpp`: the install runs it, by path, before llamafoundry
itself is installed. Every other llama_cpp call of the project lives in `model/llamacpp.py`.

A model that passed on this build is remembered (a marker file keyed by the build's libraries and the model file),
so servers and replicas starting again do not pay for the check.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_MODEL = Path(__file__).resolve().parents[1] / "model" / "data" / "llamafoundry-demo.gguf"
CHECK_TIMEOUT_S = 600.0
NUM_PROMPT_TOKENS = 32
RECORD_NAME = "llamafoundry-llama-build.json"  # in the venv: which wheel the install chose (llama_build.py)
CRASHED_MARKER = "crashed.txt"  # in a wheel's folder: that build crashed here, the install skips it
REBUILD_HINT = (
    "Rebuild llama.cpp for this CPU: `make clean && make serve` in the llamafoundry checkout (the install runs "
    "each instruction set before using it and skips a build marked as crashing here), then `llamafoundry doctor` "
    "shows what the build uses."
)


class ModelCrashError(RuntimeError):
    """The model runtime died (by a signal, or an error) decoding in the check's child process; the message is a
    sentence for the user: what happened, the likely cause, the fix."""


@dataclass
class CheckResult:
    """How the child ended.

    Attributes:
        ok: it decoded and exited normally.
        returncode: the child's exit status (negative: the signal that killed it).
        message: a sentence for the user when not ok; empty when ok.
        system_info: llama.cpp's own summary of the build (`llama_print_system_info`) when it ran.
        seconds: how long the child took.
    """

    ok: bool
    returncode: int
    message: str = ""
    system_info: str | None = None
    seconds: float = 0.0
    tokens_per_s: float | None = None  # single-stream decode speed, when a timed run was asked for
    threads: int | None = None

    @property
    def died_by_signal(self) -> bool:
        return self.returncode < 0


def check(
    model: Path = DEMO_MODEL,
    python: str = sys.executable,
    gpu_layers: int = 0,
    timeout_s: float = CHECK_TIMEOUT_S,
    bench_seconds: float = 0.0,
    threads: int | None = None,
) -> CheckResult:
    """Run the decode in a child process of `python` (the interpreter whose llama_cpp is checked); with
    `bench_seconds`, the child then decodes one token at a time for that long and reports the speed."""
    started = time.monotonic()
    command = [python, str(Path(__file__).resolve()), "--child", "--model", str(model), "--gpu-layers", str(gpu_layers),
               "--bench-seconds", str(bench_seconds)]  # fmt: skip
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        message = (
            f"Decoding {NUM_PROMPT_TOKENS + 1} tokens of {model} took more than {timeout_s:.0f} s; the machine may "
            "be swapping or the model be far too large for it (`llamafoundry doctor --model` measures it)."
        )
        return CheckResult(False, 1, message, seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    if done.returncode == 0:
        info = _last_json(done.stdout)
        speed, used = info.get("tokens_per_s"), info.get("threads")
        return CheckResult(True, 0, system_info=info.get("system_info"), seconds=seconds,
                           tokens_per_s=float(speed) if speed is not None else None,
                           threads=int(used) if used is not None else None)  # fmt: skip
    return CheckResult(False, done.returncode, explain(done.returncode, model, done.stderr), seconds=seconds)


def explain(returncode: int, model: Path, stderr: str = "") -> str:
    """A sentence naming what ended the check's child, its likely cause and the fix."""
    if returncode < 0:
        return "llama.cpp " + explain_exit(returncode, f"decoding {model}")
    said = _last_json(stderr).get("error") or (stderr.strip().splitlines() or ["no output"])[-1]
    return f"llama.cpp could not decode {model}: {said}"


def explain_exit(returncode: int, doing: str) -> str:
    """How a llama.cpp process ended, as the rest of a sentence: "died with SIGILL (Illegal instruction) while
    serving: the installed build uses ...". A positive status is an ordinary exit."""
    if returncode >= 0:
        return f"exited with status {returncode} {doing}."
    number = -returncode
    name = _signal_text(number)
    if number == signal.SIGILL:
        return (
            f"died with {name} {doing}: the installed llama.cpp build uses a CPU instruction this machine cannot "
            f"execute (some virtual machines advertise AMX or AVX-512 and fault on it). {REBUILD_HINT}"
        )
    if number in (signal.SIGSEGV, signal.SIGBUS):
        return (
            f"crashed with {name} {doing}: the model file may be corrupt or truncated (compare its size and SHA-256 "
            f"with its source, or download it again), or the llama.cpp build is broken. {REBUILD_HINT}"
        )
    if number == signal.SIGKILL:
        return (
            f"was killed ({name}) {doing}, most often by the kernel's out-of-memory killer: the model needs more "
            "memory than is free. Use a smaller model or quantization, fewer --parallel slots or a smaller "
            "--ctx-size, or free memory."
        )
    return f"died with {name} {doing}. {REBUILD_HINT}"


def ensure_model_decodes(model: Path, gpu_layers: int = 0, cache_dir: Path | None = None) -> None:
    """Raise `ModelCrashError` unless `model` decodes with this process's llama.cpp; remembered once it does."""
    marker = _marker(model, gpu_layers, cache_dir)
    if marker is not None and marker.exists():
        return
    result = check(model, gpu_layers=gpu_layers)
    if not result.ok:
        if result.returncode == -signal.SIGILL:
            mark_installed_build_crashed(result.message)
        raise ModelCrashError(result.message)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"model": str(model), "seconds": round(result.seconds, 2)}))


def mark_installed_build_crashed(message: str, prefix: Path | None = None) -> Path | None:
    """Mark the wheel this environment's install chose as crashing, so the next install builds a plainer one;
    the marker's path, or None when the install left no record (llama-cpp-python installed by hand)."""
    try:
        record = json.loads(((prefix or Path(sys.prefix)) / RECORD_NAME).read_text())
        marker = Path(record["wheel"]).parent / CRASHED_MARKER
        marker.write_text(message)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return marker


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamafoundry" / "decode-checks"


def _marker(model: Path, gpu_layers: int, cache_dir: Path | None) -> Path | None:
    """The marker file of this (llama.cpp build, model file, offload) triple; None if the build is not found."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    libraries = sorted(Path(spec.origin).parent.rglob("*.so*"))
    identity = [str(model.resolve()), *_stat(model), gpu_layers]
    for library in libraries:
        identity += [str(library), *_stat(library)]
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    return (cache_dir or default_cache_dir()) / digest


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def _signal_text(number: int) -> str:
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    description = signal.strsignal(sig)
    return f"{sig.name} ({description})" if description else sig.name


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return {}


def _child(model: Path, gpu_layers: int, bench_seconds: float, threads: int | None) -> int:
    """In the child: load `model`, decode a 32-token prompt in one batch, then one token; then, with
    `bench_seconds`, one token at a time for that long (single-stream decode speed)."""
    import ctypes

    import llama_cpp

    if os.environ.get("LLAMAFOUNDRY_LLAMA_LOG") != "1":
        quiet = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = gpu_layers
    loaded = llama_cpp.llama_model_load_from_file(str(model).encode(), params)
    if not loaded:
        print(
            json.dumps({"error": f"llama.cpp could not load {model} (not a GGUF file it can read?)"}), file=sys.stderr
        )
        return 2
    context_params = llama_cpp.llama_context_default_params()
    num_threads = threads or (os.cpu_count() or 1 if bench_seconds else max(1, min(4, os.cpu_count() or 1)))
    context_params.n_ctx = 512 if bench_seconds else 64
    context_params.n_batch = 64
    context_params.n_threads = context_params.n_threads_batch = num_threads
    context = llama_cpp.llama_init_from_model(loaded, context_params)
    if not context:
        print(json.dumps({"error": "llama.cpp could not create a context for the model"}), file=sys.stderr)
        return 2
    vocab = llama_cpp.llama_model_get_vocab(loaded)
    num_tokens = llama_cpp.llama_vocab_n_tokens(vocab)
    prompt = [llama_cpp.llama_vocab_bos(vocab) % num_tokens] + [i % num_tokens for i in range(1, NUM_PROMPT_TOKENS)]
    tokens = (llama_cpp.llama_token * len(prompt))(*prompt)
    if llama_cpp.llama_decode(context, llama_cpp.llama_batch_get_one(tokens, len(prompt))) != 0:
        print(json.dumps({"error": "llama_decode failed on the prompt"}), file=sys.stderr)
        return 2
    logits = llama_cpp.llama_get_logits_ith(context, -1)
    best = max(range(num_tokens), key=lambda i: logits[i])
    nxt = (llama_cpp.llama_token * 1)(best)
    if llama_cpp.llama_decode(context, llama_cpp.llama_batch_get_one(nxt, 1)) != 0:
        print(json.dumps({"error": "llama_decode failed on the next token"}), file=sys.stderr)
        return 2
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    report: dict[str, Any] = {"ok": True, "system_info": info, "threads": num_threads}
    if bench_seconds > 0:
        report["tokens_per_s"] = _timed_decode(llama_cpp, context, best, len(prompt) + 1, bench_seconds)
    print(json.dumps(report))
    return 0


def _timed_decode(llama_cpp: Any, context: Any, token: int, position: int, seconds: float) -> float:
    """Decode one token per step (the same token: the speed does not depend on which) for `seconds`; tokens/s.
    The context is cleared when full, so positions stay within 512."""
    one = (llama_cpp.llama_token * 1)(token)
    memory = llama_cpp.llama_get_memory(context)
    num_tokens, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        if position >= 511:
            llama_cpp.llama_memory_clear(memory, True)
            position = 0
        if llama_cpp.llama_decode(context, llama_cpp.llama_batch_get_one(one, 1)) != 0:
            break
        position += 1
        num_tokens += 1
    return num_tokens / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Decode a few tokens with the installed llama.cpp, in a child.")
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--bench-seconds", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.model, args.gpu_layers, args.bench_seconds, args.threads)
    result = check(args.model, gpu_layers=args.gpu_layers, bench_seconds=args.bench_seconds, threads=args.threads)
    print(json.dumps(dataclasses.asdict(result)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
