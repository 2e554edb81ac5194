"""Random-weight GGUF builder: real llama.cpp loads what it writes (tiny preset only; the big shapes by arithmetic)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest

from llamafoundry.model import gguf_builder
from llamafoundry.model.gguf_builder import (
    TEMPLATE_DIR,
    build_random_gguf,
    default_tokenizer_path,
    llama3_rope_factors,
)
from llamafoundry.model.llamacpp import LlamaCppRunner, LlamaCppVocab

LLAMA3_VOCAB_SIZE = 128256
BEGIN_OF_TEXT = 128000  # <|begin_of_text|>
EOT_ID = 128009  # <|eot_id|>

TEXTS = [
    "Hello world",
    " Hello, world!",
    "Äpfel und Birnen kosten 4 ½ Euro",
    "нещо на Български",
    "this is 🦙.cpp\n\n\tindented",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
]


@pytest.fixture(scope="module")
def tiny_f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_gguf(tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", quant="F16", seed=0)


@pytest.fixture(scope="module")
def tiny_q8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_gguf(tmp_path_factory.mktemp("gguf") / "tiny-q8.gguf", quant="Q8_0", seed=0)


@pytest.fixture(scope="module")
def original_vocab() -> Iterator[LlamaCppVocab]:
    vocab = LlamaCppVocab(default_tokenizer_path())
    yield vocab
    vocab.close()


@pytest.fixture(scope="module")
def runner(tiny_f16: Path) -> Iterator[LlamaCppRunner]:
    model = LlamaCppRunner(tiny_f16, kv_size=64, max_seqs=1, max_batch_tokens=32)
    yield model
    model.close()


def _decode_last_logits(model: LlamaCppRunner, prompt: str) -> np.ndarray:
    tokens = model.tokenize(prompt, add_bos=True)
    model.seq_remove(0)
    model.batch_clear()
    for pos, token in enumerate(tokens):
        model.batch_add(token, pos, [0], want_logits=pos == len(tokens) - 1)
    model.decode()
    return model.logits(len(tokens) - 1).copy()


def test_tiny_carries_llama_metadata_and_the_llama3_vocabulary(runner: LlamaCppRunner) -> None:
    assert runner.vocab_size == LLAMA3_VOCAB_SIZE
    assert runner.metadata("general.architecture") == "llama"
    assert runner.metadata("general.name") == "llamafoundry random tiny"
    assert runner.metadata("tokenizer.ggml.pre") == "llama-bpe"
    assert runner.n_ctx_train() == 8192
    assert runner.bos_token_id == BEGIN_OF_TEXT
    assert EOT_ID in runner.eog_token_ids


def test_tiny_gets_the_llama31_chat_template(runner: LlamaCppRunner) -> None:
    template = (TEMPLATE_DIR / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text(encoding="utf-8")
    assert runner.metadata("tokenizer.chat_template") == template


@pytest.mark.parametrize("text", TEXTS)
def test_built_model_tokenizes_like_the_original(
    runner: LlamaCppRunner, original_vocab: LlamaCppVocab, text: str
) -> None:
    expected = original_vocab.tokenize(text, add_bos=True)
    assert runner.tokenize(text, add_bos=True) == expected
    assert b"".join(runner.token_bytes(t, special=True) for t in expected[1:]) == text.encode()


def test_f16_decode_gives_finite_logits_over_the_vocabulary(runner: LlamaCppRunner) -> None:
    logits = _decode_last_logits(runner, "The capital of France is")
    assert logits.shape == (LLAMA3_VOCAB_SIZE,)
    assert np.isfinite(logits).all()
    assert logits.std() > 0


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
def test_quantized_tiny_loads_and_decodes(tiny_q8: Path, tmp_path: Path, quant: str) -> None:
    # 64-wide rows are not a multiple of 256: llama.cpp falls back from K-quants for those tensors
    path = tiny_q8 if quant == "Q8_0" else build_random_gguf(tmp_path / "tiny-q4.gguf", quant=quant)
    assert not list(path.parent.glob("*.tmp")), "the temporary F16 file is left behind"
    model = LlamaCppRunner(path, kv_size=64, max_seqs=1, max_batch_tokens=32)
    try:
        assert model.vocab_size == LLAMA3_VOCAB_SIZE
        assert model.metadata("tokenizer.chat_template")
        logits = _decode_last_logits(model, "Hello")
        assert logits.shape == (LLAMA3_VOCAB_SIZE,)
        assert np.isfinite(logits).all()
    finally:
        model.close()


def test_quantized_file_is_smaller_than_f16(tiny_f16: Path, tiny_q8: Path) -> None:
    assert tiny_q8.stat().st_size < tiny_f16.stat().st_size


def test_same_seed_gives_a_byte_identical_file(tiny_f16: Path, tiny_q8: Path, tmp_path: Path) -> None:
    assert build_random_gguf(tmp_path / "again.gguf", seed=0).read_bytes() == tiny_f16.read_bytes()
    assert build_random_gguf(tmp_path / "again-q8.gguf", quant="Q8_0").read_bytes() == tiny_q8.read_bytes()
    assert build_random_gguf(tmp_path / "other.gguf", seed=1).read_bytes() != tiny_f16.read_bytes()


def test_chat_template_of_a_given_tokenizer_wins(tmp_path: Path) -> None:
    tokenizer = tmp_path / "tokenizer-with-template.gguf"
    writer = gguf.GGUFWriter(tokenizer, "llama")
    for field in gguf_builder._read_tokenizer(default_tokenizer_path()):
        writer.add_key_value(field.key, field.value, field.vtype, field.sub_type)
    writer.add_chat_template("{{ messages[0]['content'] }}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()

    model = LlamaCppVocab(build_random_gguf(tmp_path / "custom.gguf", tokenizer=tokenizer), vocab_only=False)
    try:
        assert model.metadata("tokenizer.chat_template") == "{{ messages[0]['content'] }}"
    finally:
        model.close()


def test_progress_reports_every_stage_to_completion(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    build_random_gguf(tmp_path / "q8.gguf", quant="Q8_0", progress=lambda *call: calls.append(call))
    last = {stage: (done, total) for stage, done, total in calls}
    assert set(last) == {"writing weights", "quantizing to Q8_0"}
    assert all(done == total for done, total in last.values())


def test_llama3_rope_factors_blend_from_one_to_the_scaling_factor() -> None:
    factors = llama3_rope_factors(head_dim=128, factor=32.0)
    assert factors.shape == (64,) and factors.dtype == np.float32
    assert factors[0] == 1.0 and factors[-1] == 32.0
    assert np.all(np.diff(factors) >= 0)
    assert 1.0 < factors[32] < 32.0  # wavelengths between 2048 and 8192 positions get a smooth blend


def test_unknown_preset_or_quant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        build_random_gguf(tmp_path / "x.gguf", preset="llama-4")
    with pytest.raises(ValueError, match="quantization"):
        build_random_gguf(tmp_path / "x.gguf", quant="Q2_K")
