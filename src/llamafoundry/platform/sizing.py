"""A local deployment's engine sizes: what its replicas run with (`deploy create/update --ctx-size --parallel
--threads --kv-cache-type --flash-attn --gpu-layers --speculative-tokens`, the same fields in the management API),
their defaults (from the GGUF's own metadata and the machine), and the memory they need, checked before anything
starts: a size that cannot fit is refused with the numbers, not found out by the OOM killer.

The sizes a user sets are kept in the deployment's `settings` (only those set: a default follows the machine);
`resolve` fills in the rest the same way for the check, for the replicas and for `deploy show`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llamafoundry.model.gguf_builder import KvShape, read_kv_shape
from llamafoundry.platform.errors import DeploymentError

GiB = 1024**3
DEFAULT_CTX_SIZE = 8192  # the default context, when the model was trained for more (the KV cache grows with it)
MIN_DEFAULT_CTX_SIZE = 2048  # a default context is halved down to this to fit the machine's memory
DEFAULT_PARALLEL = 4
RUNTIME_BYTES = GiB // 2  # per replica beside weights and KV: llama.cpp's compute buffers, Python, the server
KV_BYTES_PER_NUMBER = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # llama.cpp's block sizes
FLASH_ATTN_MODES = ("auto", "on", "off")
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$")

# field: (type, lowest, highest or None, what it means), the choices of the text fields below
FIELDS: dict[str, tuple[type, int, int | None, str]] = {
    "ctx_size": (int, 16, None, "tokens of one request, prompt and completion"),
    "parallel": (int, 1, 128, "sequences decoded together per replica (the most n/best_of a request may ask)"),
    "threads": (int, 1, 1024, "CPU threads per replica"),
    "gpu_layers": (int, 0, 1024, "layers offloaded to the GPU"),
    "speculative_tokens": (int, 0, 64, "prompt-lookup draft tokens"),
    "kv_cache_type": (str, 0, None, "element type of the KV cache"),
    "flash_attn": (str, 0, None, "llama.cpp flash attention"),
}
CHOICES = {"kv_cache_type": tuple(KV_BYTES_PER_NUMBER), "flash_attn": FLASH_ATTN_MODES}


@dataclass(frozen=True)
class Sizing:
    """What every replica of a deployment runs with."""

    ctx_size: int
    parallel: int
    threads: int
    kv_cache_type: str = "f16"
    flash_attn: str = "auto"
    gpu_layers: int = 0
    speculative_tokens: int = 15

    def serve_options(self) -> list[str]:
        """The `serve --replica` options of these sizes (the KV cache type goes with the prefix cache's)."""
        return [
            "--ctx-size", str(self.ctx_size), "--parallel", str(self.parallel), "--threads", str(self.threads),
            "--flash-attn", self.flash_attn, "--gpu-layers", str(self.gpu_layers),
            "--speculative-tokens", str(self.speculative_tokens),
        ]  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a deployment's replicas need: the weights once (every replica maps the same file), and per replica
    its KV cache and runtime."""

    weights: int
    kv_per_replica: int
    runtime_per_replica: int
    replicas: int

    @property
    def total(self) -> int:
        return self.weights + self.replicas * (self.kv_per_replica + self.runtime_per_replica)


def sizing_changes(values: Mapping[str, Any]) -> dict[str, Any]:
    """The sizing fields of `values` (CLI options or a request body; None: not given), checked one by one.

    Raises:
        DeploymentError: a value of the wrong type, out of bounds, or not one of the choices.
    """
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FIELDS or value is None:
            continue
        kind, lowest, highest, meaning = FIELDS[name]
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise DeploymentError(f"{name} must be a whole number ({meaning}), got {value!r}.")
            if value < lowest or (highest is not None and value > highest):
                bound = f"from {lowest}" + (f" to {highest}" if highest is not None else "")
                raise DeploymentError(f"{name} must be {bound} ({meaning}), got {value}.")
        elif value not in CHOICES[name]:
            raise DeploymentError(f"{name} must be one of {', '.join(CHOICES[name])} ({meaning}), got {value!r}.")
        changes[name] = value
    return changes


def resolve(settings: Mapping[str, Any], shape: KvShape, instances: int, cores: int | None = None) -> Sizing:
    """The sizes of a deployment: those in its `settings`, defaults for the rest. `cores`: the instance type's;
    None: the machine's shared by the replicas."""
    threads = cores or max(1, (os.cpu_count() or 1) // max(1, instances))
    sizing = Sizing(
        ctx_size=int(settings.get("ctx_size") or min(shape.context_length, DEFAULT_CTX_SIZE)),
        parallel=int(settings.get("parallel") or DEFAULT_PARALLEL),
        threads=int(settings.get("threads") or threads),
        kv_cache_type=str(settings.get("kv_cache_type") or "f16"),
        flash_attn=str(settings.get("flash_attn") or "auto"),
        gpu_layers=int(settings.get("gpu_layers") or 0),
        speculative_tokens=int(settings.get("speculative_tokens", 15)),
    )
    _check_combination(sizing, shape)
    return sizing


def _check_combination(sizing: Sizing, shape: KvShape) -> None:
    if sizing.ctx_size > shape.context_length:
        raise DeploymentError(
            f"ctx_size {sizing.ctx_size} is more than the {shape.context_length} tokens the model was trained for; "
            f"set --ctx-size {shape.context_length} or less."
        )
    quantized = sizing.kv_cache_type != "f16"
    if quantized and (shape.key_length % 32 or shape.value_length % 32):
        raise DeploymentError(
            f"kv_cache_type {sizing.kv_cache_type} stores heads in blocks of 32 numbers, and this model's attention "
            f"heads have {shape.key_length}; use kv_cache_type f16."
        )
    if quantized and sizing.flash_attn == "off":
        raise DeploymentError(
            f"kv_cache_type {sizing.kv_cache_type} needs flash attention (llama.cpp keeps a quantized V cache only "
            "with it); set flash_attn to auto or on, or kv_cache_type to f16."
        )


def estimate(shape: KvShape, sizing: Sizing, weights_bytes: int, replicas: int) -> MemoryEstimate:
    numbers = shape.kv_numbers_per_token * sizing.ctx_size * sizing.parallel
    kv = int(numbers * KV_BYTES_PER_NUMBER[sizing.kv_cache_type])
    return MemoryEstimate(weights_bytes, kv, RUNTIME_BYTES, replicas)


def plan(
    settings: Mapping[str, Any], weights: Path, instances: int, cores: int | None = None,
    available: int | None = None,
) -> tuple[Sizing, MemoryEstimate]:  # fmt: skip
    """The sizes a local deployment runs with and their memory, checked against what is free.

    A default context that does not fit is halved (to 2,048 at the least); sizes the user set are never changed.

    Args:
        available: bytes free (default: the machine's MemAvailable).
    Raises:
        DeploymentError: a size that does not fit, with the numbers; a combination that cannot work.
    """
    shape = model_shape(weights)
    free = available_memory() if available is None else available
    weights_bytes = weights_size(weights)
    sizing = resolve(settings, shape, instances, cores)
    needed = estimate(shape, sizing, weights_bytes, instances)
    while needed.total > free and "ctx_size" not in settings and sizing.ctx_size > MIN_DEFAULT_CTX_SIZE:
        sizing = Sizing(**{**sizing.as_dict(), "ctx_size": max(MIN_DEFAULT_CTX_SIZE, sizing.ctx_size // 2)})
        needed = estimate(shape, sizing, weights_bytes, instances)
    if needed.total > free:
        raise DeploymentError(_too_big(sizing, needed, free))
    return sizing, needed


def _too_big(sizing: Sizing, needed: MemoryEstimate, free: int) -> str:
    replica = (
        f"KV {_gib(needed.kv_per_replica)} ({sizing.parallel} x {sizing.ctx_size} tokens, {sizing.kv_cache_type}) + "
        f"{_gib(needed.runtime_per_replica)}"
    )
    if needed.replicas > 1:
        replica = f"{needed.replicas} x ({replica})"
    return (
        f"This deployment needs {_gib(needed.total)} GiB: weights {_gib(needed.weights)} + {replica}; "
        f"{_gib(free)} GiB free. Lower --ctx-size or --parallel, use --kv-cache-type q8_0 (about half the KV "
        "bytes), or fewer --instances."
    )


def host_tier_shortfall(ram_bytes: int, shape: KvShape, ctx_size: int, parallel: int, kv_cache_type: str) -> str | None:
    """A warning when a host-memory tier of `ram_bytes` (0: none) holds less than the KV cache it backs: when
    conversations outnumber the slots, the states saved out of the slots then push each other out before their
    conversations come back, and every returning turn is computed again (a 16 MiB tier beside two 1,024-token
    slots of a 1B model kept none of four conversations' histories). None when it holds that much."""
    per_token = shape.kv_numbers_per_token * KV_BYTES_PER_NUMBER[kv_cache_type]
    slots_bytes = int(per_token * ctx_size * parallel)
    if ram_bytes <= 0 or ram_bytes >= slots_bytes:
        return None
    return (
        f"--prefix-cache-ram {_binary_size(ram_bytes)} holds the KV states of {int(ram_bytes // per_token):,} tokens "
        f"of this model ({kv_cache_type}), less than its {parallel} slot(s) of {ctx_size:,} tokens "
        f"({_binary_size(slots_bytes)}): conversations that come back after their slot was reused will mostly find "
        "their histories dropped and be computed again. Leave --prefix-cache-ram at auto, or raise it."
    )


def _binary_size(num_bytes: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 2**20)):
        if num_bytes >= size:
            return f"{num_bytes / size:,.1f} {unit}"
    return f"{num_bytes / 1024:,.1f} KiB"


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / GiB:.1f}"


def model_shape(weights: Path) -> KvShape:
    try:
        return read_kv_shape(weights)
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"Cannot read the model's metadata from {weights}: {exc}") from None


def weights_size(weights: Path) -> int:
    """Bytes of the weights: every part of a split file (`x-00001-of-00003.gguf`)."""
    split = _SPLIT.match(weights.name)
    if split is None:
        return weights.stat().st_size
    parts = weights.parent.glob(f"{split.group('stem')}-*-of-{split.group('total')}.gguf")
    return sum(part.stat().st_size for part in parts)


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping); elsewhere, physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
