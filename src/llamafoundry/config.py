"""Settings, validated at construction. A leaf module: imports nothing from the rest of the package."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path


def generate_api_key() -> str:
    """A 32-character key, as Azure deployments have."""
    return secrets.token_hex(16)


FLASH_ATTN_MODES = {"auto": None, "on": True, "off": False}
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")  # model/llamacpp.py maps them to llama.cpp's types
GiB = 1 << 30
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
               "g": 10**9, "gb": 10**9, "gib": GiB, "t": 10**12, "tb": 10**12, "tib": 1 << 40}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes from a size such as `8GiB`, `512MiB`, `1.5GB` or `0`."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size: write a number of bytes with a unit, such as 4GiB or 512MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def default_prefix_cache_ram() -> int:
    """Host memory for saved KV states when `--prefix-cache-ram` is not given: a fifth of the machine's memory, at
    most 8 GiB (llama-server's `--cache-ram` default). A budget, not a reservation: only saved states use it."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * GiB
    return min(8 * GiB, total // 5)


@dataclass
class EngineSettings:
    """How the local engine runs one model.

    `ctx_size` is the context of one sequence (prompt + completion); the KV cache holds `parallel` of them.
    """

    model_path: Path
    ctx_size: int = 4096
    parallel: int = 4
    threads: int | None = None
    batch_size: int = 1024  # tokens per step; llama.cpp computes them in micro-batches of 512
    max_queue: int = 64
    flash_attn: str = "auto"  # auto (llama.cpp decides), on, off
    batch_pad: int = 16  # pad decode steps to one pass of this many sequences (LLMEngine.batch_pad); 0: off
    speculative_tokens: int = 15  # prompt-lookup draft length (LLMEngine.speculative_tokens); 0: off
    seed: int | None = None  # the seed of requests that send none (LLMEngine.default_seed); None: random
    gpu_layers: int = 0  # layers offloaded to a GPU (a llama.cpp built with LLAMAFOUNDRY_GPU=cuda|vulkan); 0: CPU
    kv_cache_type: str = "f16"  # f16, q8_0, q4_0: keys and values at ~2, ~1.06, ~0.56 bytes per number
    prefix_cache_ram: int = 0  # bytes of host memory for KV states saved out of the slots (0: none)
    prefix_cache_dir: Path | None = None  # KV states on disk, kept across restarts and shared by replicas
    prefix_cache_disk: int = 16 * GiB  # bytes the disk tier keeps for this model (all processes together)

    def __post_init__(self) -> None:
        self.model_path = Path(self.model_path)
        if self.prefix_cache_dir is not None:
            self.prefix_cache_dir = Path(self.prefix_cache_dir)
        if self.flash_attn not in FLASH_ATTN_MODES:
            raise ValueError(f"flash_attn must be one of {', '.join(FLASH_ATTN_MODES)}, got {self.flash_attn!r}")
        if self.kv_cache_type not in KV_CACHE_TYPES:
            raise ValueError(f"kv_cache_type must be one of {', '.join(KV_CACHE_TYPES)}, got {self.kv_cache_type!r}")
        if self.kv_cache_type != "f16" and self.flash_attn == "off":
            raise ValueError(
                f"--kv-cache-type {self.kv_cache_type} needs flash attention (llama.cpp keeps a quantized V cache only "
                "with it): drop --flash-attn off, or use --kv-cache-type f16."
            )
        for name in ("prefix_cache_ram", "prefix_cache_disk"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or more bytes, got {getattr(self, name)}")
        for name in ("ctx_size", "parallel", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.ctx_size < 16:
            raise ValueError(f"ctx_size must be at least 16 tokens, got {self.ctx_size}")
        for name in ("batch_pad", "speculative_tokens", "gpu_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or more, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {self.max_queue}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


@dataclass
class ServeSettings:
    """What `llamafoundry serve` was asked to do."""

    engine: EngineSettings
    model_name: str
    model_provider: str = "Meta"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = field(default_factory=generate_api_key)
    # Rate limits of the bare routes' model: None = serverless defaults (200,000 / 1,000), 0 = not limited.
    tokens_per_minute: int | None = None
    requests_per_minute: int | None = None
    redis_url: str | None = None  # rate-limit counters shared by several gateway processes
    metrics_key: str | None = None  # what GET /metrics must present (None: open)
    # Seconds without output after which a stream gets an empty chunk (0: never). A prompt of thousands of tokens
    # takes minutes to compute on a CPU, and so can a wait for a free slot: proxies drop connections idle for
    # 60 s (nginx's default read timeout), the SDKs after 300 s; SSE comments (`: ping`) break the Azure SDK.
    stream_keepalive_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        for name in ("tokens_per_minute", "requests_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 (not limited) or more, got {value}")
        if self.stream_keepalive_s < 0:
            raise ValueError(f"stream_keepalive_s must be 0 (off) or more, got {self.stream_keepalive_s}")
