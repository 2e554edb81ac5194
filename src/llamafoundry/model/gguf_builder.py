"""Llama-architecture GGUF files with random weights, real Llama shapes and a real tokenizer.

Tests load the `tiny` preset; benchmarks load the real shapes, whose speed does not depend on the weight values.
The file is written in F16 one tensor at a time (an 8B F16 file is 16 GB, more than we may hold in memory) and
then, for Q8_0 / Q4_K_M, quantized by llama.cpp's own quantizer.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import numpy as np

from llamafoundry.model.llamacpp import quantize_gguf

DATA_DIR = Path(__file__).parent / "data"
TEMPLATE_DIR = DATA_DIR / "templates"
QUANTS = ("Q4_K_M", "Q8_0", "F16")
DEFAULT_PRESET = "tiny"

ROPE_FREQ_BASE = 500000.0
RMS_NORM_EPS = 1e-5
WEIGHT_STD = 0.02
_NORMAL_TABLE_SIZE = 1 << 16  # weights are drawn from a table of this many float16 normals (4x faster than sampling)

Progress = Callable[[str, int, int], None]

_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_SCALARS = {
    gguf.GGUFValueType.UINT8: struct.Struct("<B"),
    gguf.GGUFValueType.INT8: struct.Struct("<b"),
    gguf.GGUFValueType.UINT16: struct.Struct("<H"),
    gguf.GGUFValueType.INT16: struct.Struct("<h"),
    gguf.GGUFValueType.UINT32: _U32,
    gguf.GGUFValueType.INT32: struct.Struct("<i"),
    gguf.GGUFValueType.FLOAT32: struct.Struct("<f"),
    gguf.GGUFValueType.BOOL: struct.Struct("<?"),
    gguf.GGUFValueType.UINT64: _U64,
    gguf.GGUFValueType.INT64: struct.Struct("<q"),
    gguf.GGUFValueType.FLOAT64: struct.Struct("<d"),
}


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters of one Llama model: enough to lay out every tensor of its GGUF.

    Attributes:
        name: the preset name (`general.name` becomes "llamafoundry random <name>").
        n_embd: hidden size.
        n_layer: transformer blocks.
        n_head: query heads.
        n_head_kv: key/value heads (grouped-query attention when fewer than `n_head`).
        n_ff: feed-forward hidden size.
        context_length: trained context (`llama.context_length`).
        tied_output: the output projection reuses `token_embd` (no `output.weight`).
        rope_factor: Llama 3 rope scaling factor (8 for Llama 3.1, 32 for Llama 3.2).
        chat_template: file name of Meta's chat template under `data/templates`.
    """

    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int
    tied_output: bool
    rope_factor: float
    chat_template: str

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


_LLAMA_31_TEMPLATE = "meta-llama-Llama-3.1-8B-Instruct.jinja"
_LLAMA_32_TEMPLATE = "meta-llama-Llama-3.2-3B-Instruct.jinja"
_LLAMA_33_TEMPLATE = "meta-llama-Llama-3.3-70B-Instruct.jinja"


def meta_chat_template(model_name: str) -> str:
    """Meta's chat template for a Llama model by its name: Llama 3.2 (Vision too) and 3.3 have their own, every
    other Llama 3 model (3.1, Llama Guard 3) is written as Llama 3.1 writes it."""
    name = model_name.lower()
    file = _LLAMA_32_TEMPLATE if "3.2" in name else _LLAMA_33_TEMPLATE if "3.3" in name else _LLAMA_31_TEMPLATE
    return (TEMPLATE_DIR / file).read_text(encoding="utf-8")


PRESETS: dict[str, ModelShape] = {
    # a few MB apart from its 128256 x 64 embedding table; Llama 3.1 flavour (template, rope factor)
    "tiny": ModelShape("tiny", 64, 2, 4, 2, 192, 8192, True, 8.0, _LLAMA_31_TEMPLATE),
    # tiny with attention heads of 32 dimensions, the fewest a quantized KV cache takes (q8_0/q4_0 blocks of 32)
    "tiny-32": ModelShape("tiny-32", 128, 2, 4, 2, 384, 8192, True, 8.0, _LLAMA_31_TEMPLATE),
    "llama-3.2-1b": ModelShape("llama-3.2-1b", 2048, 16, 32, 8, 8192, 131072, True, 32.0, _LLAMA_32_TEMPLATE),
    "llama-3.2-3b": ModelShape("llama-3.2-3b", 3072, 28, 24, 8, 8192, 131072, True, 32.0, _LLAMA_32_TEMPLATE),
    "llama-3.1-8b": ModelShape("llama-3.1-8b", 4096, 32, 32, 8, 14336, 131072, False, 8.0, _LLAMA_31_TEMPLATE),
}


class _TensorSpec(NamedTuple):
    name: str
    shape: tuple[int, ...]  # numpy (row-major) order: [rows, cols]; GGUF stores it reversed
    kind: str  # "weight" (random F16), "norm" (ones, F32) or "rope" (rope_freqs factors, F32)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float16 if self.kind == "weight" else np.float32)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class _Field(NamedTuple):
    key: str
    value: Any
    vtype: gguf.GGUFValueType
    sub_type: gguf.GGUFValueType | None


def default_tokenizer_path() -> Path:
    """The packaged Llama 3 tokenizer GGUF (vocabulary only, no tensors)."""
    return DATA_DIR / "llama3-tokenizer.gguf"


def build_random_gguf(
    out: str | Path,
    preset: str = DEFAULT_PRESET,
    quant: str = "F16",
    tokenizer: str | Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Write a Llama GGUF with random weights, the shapes of `preset` and the tokenizer of another GGUF.

    Args:
        out: the GGUF file to write (overwritten).
        preset: a key of PRESETS.
        quant: one of QUANTS. Q8_0 and Q4_K_M go through a temporary F16 file next to `out`.
        tokenizer: a GGUF whose `tokenizer.*` metadata is copied (default: the packaged Llama 3 tokenizer). Its
            own `tokenizer.chat_template` wins over the preset's Meta template.
        seed: the same seed gives a byte-identical file.
        progress: called as `progress(stage, done, total)` while writing and quantizing.

    Returns:
        `out` as a Path.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if quant not in QUANTS:
        raise ValueError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = _read_tokenizer(Path(tokenizer) if tokenizer is not None else default_tokenizer_path())
    report = progress or _no_progress
    if quant == "F16":
        _write_f16(out, PRESETS[preset], fields, seed, report)
        return out
    tmp = out.with_name(out.name + ".f16.tmp")
    try:
        _write_f16(tmp, PRESETS[preset], fields, seed, report)
        stage = f"quantizing to {quant}"
        report(stage, 0, 1)
        quantize_gguf(tmp, out, quant)
        report(stage, 1, 1)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def llama3_rope_factors(
    head_dim: int,
    factor: float,
    base: float = ROPE_FREQ_BASE,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_context: int = 8192,
) -> np.ndarray:
    """The `rope_freqs.weight` tensor for Llama 3.1/3.2 rope scaling, as llama.cpp's convert_hf_to_gguf.py makes it.

    Returns:
        float32 [head_dim // 2]: 1 for high frequencies, `factor` for low ones, a smooth blend in between.
    """
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    wavelen = 2 * math.pi / freqs
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = 1 / ((1 - smooth) / factor + smooth)
    scaled = np.where(wavelen > original_context / low_freq_factor, factor, blended)
    return np.where(wavelen < original_context / high_freq_factor, 1.0, scaled).astype(np.float32)


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _read_tokenizer(path: Path) -> tuple[_Field, ...]:
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer GGUF not found: {path}")
    fields = tuple(f for f in _read_metadata(path) if f.key.startswith("tokenizer."))
    if not any(f.key == gguf.Keys.Tokenizer.LIST for f in fields):
        raise ValueError(f"{path} has no {gguf.Keys.Tokenizer.LIST}: pass a GGUF file that carries a tokenizer")
    return fields


def _read_metadata(path: Path) -> list[_Field]:
    """Every key/value pair of a little-endian GGUF v2/v3 file, strings kept as their raw bytes.

    gguf.GGUFReader makes a numpy view per string and takes seconds on a 128k-token vocabulary; this reads the
    same metadata in a fraction of a second and never touches tensor data.
    """
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        magic, version, _num_tensors, num_kv = struct.unpack_from("<IIQQ", buf, 0)
        if magic != gguf.GGUF_MAGIC or version not in (2, 3):
            raise ValueError(f"{path} is not a little-endian GGUF v2/v3 file")
        fields, pos = [], 24
        for _ in range(num_kv):
            key, pos = _read_string(buf, pos)
            vtype = gguf.GGUFValueType(_U32.unpack_from(buf, pos)[0])
            value, sub_type, pos = _read_value(buf, pos + 4, vtype)
            fields.append(_Field(key.decode("utf-8"), value, vtype, sub_type))
    return fields


def _read_string(buf: mmap.mmap, pos: int) -> tuple[bytes, int]:
    (length,) = _U64.unpack_from(buf, pos)
    return buf[pos + 8 : pos + 8 + length], pos + 8 + length


def _read_value(buf: mmap.mmap, pos: int, vtype: gguf.GGUFValueType) -> tuple[Any, gguf.GGUFValueType | None, int]:
    """One metadata value at `pos`: (value, array item type or None, position after it)."""
    if vtype == gguf.GGUFValueType.STRING:
        value, pos = _read_string(buf, pos)
        return value, None, pos
    if vtype != gguf.GGUFValueType.ARRAY:
        scalar = _SCALARS[vtype]
        return scalar.unpack_from(buf, pos)[0], None, pos + scalar.size
    item_type = gguf.GGUFValueType(_U32.unpack_from(buf, pos)[0])
    (count,) = _U64.unpack_from(buf, pos + 4)
    pos += 12
    if item_type == gguf.GGUFValueType.STRING:
        items = []
        for _ in range(count):
            item, pos = _read_string(buf, pos)
            items.append(item)
        return items, item_type, pos
    if item_type == gguf.GGUFValueType.ARRAY:
        raise ValueError("nested GGUF metadata arrays are not supported")
    scalar = _SCALARS[item_type]
    values = np.frombuffer(buf, dtype=np.dtype(scalar.format), count=count, offset=pos).tolist()
    return values, item_type, pos + count * scalar.size


def _vocab_size(fields: tuple[_Field, ...]) -> int:
    return next(len(f.value) for f in fields if f.key == gguf.Keys.Tokenizer.LIST)


def _tensor_plan(shape: ModelShape, n_vocab: int) -> list[_TensorSpec]:
    """Every tensor llama.cpp expects for arch `llama`, in file order."""
    e, f = shape.n_embd, shape.n_ff
    q, kv = shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    plan = [_TensorSpec("rope_freqs.weight", (shape.head_dim // 2,), "rope")]
    plan.append(_TensorSpec("token_embd.weight", (n_vocab, e), "weight"))
    for i in range(shape.n_layer):
        plan += [
            _TensorSpec(f"blk.{i}.attn_norm.weight", (e,), "norm"),
            _TensorSpec(f"blk.{i}.attn_q.weight", (q, e), "weight"),
            _TensorSpec(f"blk.{i}.attn_k.weight", (kv, e), "weight"),
            _TensorSpec(f"blk.{i}.attn_v.weight", (kv, e), "weight"),
            _TensorSpec(f"blk.{i}.attn_output.weight", (e, q), "weight"),
            _TensorSpec(f"blk.{i}.ffn_norm.weight", (e,), "norm"),
            _TensorSpec(f"blk.{i}.ffn_gate.weight", (f, e), "weight"),
            _TensorSpec(f"blk.{i}.ffn_up.weight", (f, e), "weight"),
            _TensorSpec(f"blk.{i}.ffn_down.weight", (e, f), "weight"),
        ]
    plan.append(_TensorSpec("output_norm.weight", (e,), "norm"))
    if not shape.tied_output:
        plan.append(_TensorSpec("output.weight", (n_vocab, e), "weight"))
    return plan


def _add_metadata(writer: gguf.GGUFWriter, shape: ModelShape, fields: tuple[_Field, ...]) -> None:
    writer.add_name(f"llamafoundry random {shape.name}")
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_vocab_size(_vocab_size(fields))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for field in fields:
        writer.add_key_value(field.key, field.value, field.vtype, field.sub_type)
    if not any(f.key == gguf.Keys.Tokenizer.CHAT_TEMPLATE for f in fields):
        writer.add_chat_template((TEMPLATE_DIR / shape.chat_template).read_text(encoding="utf-8"))


def _write_f16(path: Path, shape: ModelShape, fields: tuple[_Field, ...], seed: int, report: Progress) -> None:
    """Write tensor infos first, then stream the data one tensor at a time (peak memory: the largest tensor)."""
    plan = _tensor_plan(shape, _vocab_size(fields))
    writer = gguf.GGUFWriter(path, "llama")
    _add_metadata(writer, shape, fields)
    for spec in plan:
        writer.add_tensor_info(spec.name, spec.shape, spec.dtype, spec.nbytes)
    rng = np.random.default_rng(seed)
    table = (rng.standard_normal(_NORMAL_TABLE_SIZE, dtype=np.float32) * WEIGHT_STD).astype(np.float16)
    rope = llama3_rope_factors(shape.head_dim, shape.rope_factor)
    total, done = sum(spec.nbytes for spec in plan), 0
    report("writing weights", done, total)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for spec in plan:
            writer.write_tensor_data(_tensor_data(spec, rng, table, rope))
            done += spec.nbytes
            report("writing weights", done, total)
    finally:
        writer.close()


def _tensor_data(spec: _TensorSpec, rng: np.random.Generator, table: np.ndarray, rope: np.ndarray) -> np.ndarray:
    if spec.kind == "rope":
        return rope
    if spec.kind == "norm":
        return np.ones(spec.shape, dtype=np.float32)
    return table[rng.integers(0, _NORMAL_TABLE_SIZE, size=spec.shape, dtype=np.uint16)]


@dataclass(frozen=True)
class KvShape:
    """What sizing a model's KV cache needs from its GGUF metadata (`<arch>.*` keys)."""

    architecture: str
    context_length: int  # the context the model was trained for
    num_layers: int
    num_kv_heads: int
    key_length: int  # dimensions per head of a key
    value_length: int

    @property
    def kv_numbers_per_token(self) -> int:
        """Numbers the KV cache holds per token: keys and values of every layer."""
        return self.num_layers * self.num_kv_heads * (self.key_length + self.value_length)


def read_kv_shape(path: Path) -> KvShape:
    """The model's shape from a GGUF file's metadata (the first part of a split file holds it), without its
    tensors. Raises ValueError for a file that is not a GGUF model."""
    values = {f.key: f.value for f in _read_metadata(path) if not f.key.startswith("tokenizer.")}
    arch = values.get("general.architecture")
    if not isinstance(arch, bytes):
        raise ValueError(f"{path} has no general.architecture: not a GGUF model")
    prefix = arch.decode()

    def number(name: str, default: int | None = None) -> int:
        value = values.get(f"{prefix}.{name}", default)
        if isinstance(value, list):  # per-layer head counts (some architectures): the largest sizes the cache
            value = max(value)
        if value is None:
            raise ValueError(f"{path} has no {prefix}.{name}")
        return int(value)

    heads = number("attention.head_count")
    head_dim = number("embedding_length") // heads
    return KvShape(
        architecture=prefix,
        context_length=number("context_length"),
        num_layers=number("block_count"),
        num_kv_heads=number("attention.head_count_kv", heads),
        key_length=number("attention.key_length", head_dim),
        value_length=number("attention.value_length", head_dim),
    )
