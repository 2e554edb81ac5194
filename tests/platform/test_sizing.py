"""A deployment's sizes: checked fields, defaults from the GGUF and the machine, the memory estimate and its
refusal with the numbers (platform/sizing.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafoundry.model.gguf_builder import KvShape, read_kv_shape
from llamafoundry.platform import sizing
from llamafoundry.platform.errors import DeploymentError

GiB = sizing.GiB
LLAMA_8B = KvShape("llama", 131072, 32, 8, 128, 128)  # Llama 3.1 8B: 32 layers, 8 KV heads of 128


def test_the_tiny_models_shape_is_read_from_its_metadata(tiny_model_path: Path) -> None:
    shape = read_kv_shape(tiny_model_path)
    assert (shape.architecture, shape.context_length, shape.num_layers, shape.num_kv_heads) == ("llama", 8192, 2, 2)
    assert shape.key_length == shape.value_length == 64 // 4  # embedding 64 over 4 query heads


@pytest.mark.parametrize(
    ("values", "sentence"),
    [
        ({"ctx_size": 8}, "ctx_size must be from 16"),
        ({"parallel": 0}, "parallel must be from 1 to 128"),
        ({"threads": "4"}, "threads must be a whole number"),
        ({"gpu_layers": True}, "gpu_layers must be a whole number"),
        ({"kv_cache_type": "q5_1"}, "kv_cache_type must be one of f16, q8_0, q4_0"),
        ({"flash_attn": "maybe"}, "flash_attn must be one of auto, on, off"),
    ],
)
def test_a_size_out_of_bounds_is_refused_by_name(values: dict[str, object], sentence: str) -> None:
    with pytest.raises(DeploymentError, match=sentence):
        sizing.sizing_changes(values)


def test_only_the_sizes_given_are_kept() -> None:
    given = {"ctx_size": 2048, "parallel": None, "tpm": 5, "kv_cache_type": "q8_0"}
    assert sizing.sizing_changes(given) == {"ctx_size": 2048, "kv_cache_type": "q8_0"}


def test_defaults_come_from_the_model_and_the_machine() -> None:
    resolved = sizing.resolve({}, LLAMA_8B, instances=2, cores=None)
    assert resolved.ctx_size == 8192  # trained for 128K: the default stops at 8K
    assert resolved.parallel == 4 and resolved.kv_cache_type == "f16"
    assert sizing.resolve({}, KvShape("llama", 2048, 2, 2, 16, 16), 1).ctx_size == 2048  # trained for less
    assert sizing.resolve({}, LLAMA_8B, 1, cores=8).threads == 8  # the instance type's cores
    assert sizing.resolve({"threads": 3}, LLAMA_8B, 1, cores=8).threads == 3


def test_the_kv_estimate_is_layers_heads_and_tokens() -> None:
    resolved = sizing.resolve({"ctx_size": 8192, "parallel": 8}, LLAMA_8B, 1)
    needed = sizing.estimate(LLAMA_8B, resolved, weights_bytes=int(4.6 * GiB), replicas=1)
    assert needed.kv_per_replica == 32 * 8 * 256 * 8192 * 8 * 2  # 8 GiB: 128 KiB per token in f16
    q8 = sizing.estimate(LLAMA_8B, sizing.resolve({"ctx_size": 8192, "parallel": 8, "kv_cache_type": "q8_0"},
                                                   LLAMA_8B, 1), 0, 1)  # fmt: skip
    assert q8.kv_per_replica == needed.kv_per_replica * 34 // 64


def test_a_size_that_does_not_fit_is_refused_with_the_numbers(tiny_model_path: Path) -> None:
    settings = {"ctx_size": 8192, "parallel": 64}
    with pytest.raises(DeploymentError) as refused:
        sizing.plan(settings, tiny_model_path, instances=3, available=GiB)
    message = str(refused.value)
    assert message.startswith("This deployment needs 1.9 GiB: weights 0.0 + 3 x (KV 0.1 (64 x 8192 tokens, f16) + 0.5)")
    assert "1.0 GiB free" in message and "--kv-cache-type q8_0" in message
    fits, _ = sizing.plan(settings, tiny_model_path, instances=1, available=GiB)  # one replica fits
    assert fits.parallel == 64


def test_a_default_context_shrinks_to_fit_but_a_given_one_never(tmp_path: Path, tiny_model_path: Path) -> None:
    shape = read_kv_shape(tiny_model_path)
    per_token = shape.kv_numbers_per_token * 2 * 128  # f16, parallel 128
    room = sizing.RUNTIME_BYTES + tiny_model_path.stat().st_size + per_token * 4096 + 1
    shrunk, _ = sizing.plan({"parallel": 128}, tiny_model_path, 1, available=room)
    assert shrunk.ctx_size == 4096  # 8192 halved once
    with pytest.raises(DeploymentError, match="128 x 8192 tokens"):
        sizing.plan({"parallel": 128, "ctx_size": 8192}, tiny_model_path, 1, available=room)


def test_combinations_that_cannot_work(tiny_model_path: Path) -> None:
    with pytest.raises(DeploymentError, match="more than the 8192 tokens the model was trained for"):
        sizing.plan({"ctx_size": 16384}, tiny_model_path, 1)
    with pytest.raises(DeploymentError, match="heads have 16; use kv_cache_type f16"):
        sizing.plan({"kv_cache_type": "q8_0"}, tiny_model_path, 1)


def test_a_quantized_cache_needs_flash_attention(tiny32_model_path: Path) -> None:
    assert sizing.plan({"kv_cache_type": "q4_0"}, tiny32_model_path, 1)[0].kv_cache_type == "q4_0"
    with pytest.raises(DeploymentError, match="q4_0 needs flash attention"):
        sizing.plan({"kv_cache_type": "q4_0", "flash_attn": "off"}, tiny32_model_path, 1)


def test_split_weights_count_every_part(tmp_path: Path) -> None:
    for part, size in ((1, 100), (2, 200), (3, 50)):
        (tmp_path / f"big-{part:05d}-of-00003.gguf").write_bytes(b"x" * size)
    (tmp_path / "other-00001-of-00002.gguf").write_bytes(b"x" * 999)
    assert sizing.weights_size(tmp_path / "big-00001-of-00003.gguf") == 350


def test_a_host_memory_tier_smaller_than_the_slots_it_backs_is_warned_about() -> None:
    """A 16 MiB tier beside two 1,024-token slots of a 1B model kept no conversation's history: said at start-up."""

    def warning(ram_bytes: int, kv_cache_type: str = "f16") -> str | None:  # two slots of 1,024 tokens
        return sizing.host_tier_shortfall(ram_bytes, LLAMA_8B, 1024, 2, kv_cache_type)

    said = warning(16 << 20)  # Llama 3.1 8B in f16: 128 KiB a token, 256 MiB for the two slots
    assert said is not None
    assert "16.0 MiB holds the KV states of 128 tokens" in said
    assert "2 slot(s) of 1,024 tokens (256.0 MiB)" in said and "auto" in said
    assert warning(256 << 20) is None
    assert warning(0) is None  # no tier: nothing to say
    assert warning(200 << 20, "q8_0") is None  # q8_0 states are 17/32 the size
    assert warning(200 << 20) is not None
