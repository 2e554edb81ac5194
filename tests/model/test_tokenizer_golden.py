"""llama.cpp's golden tokenization cases for the Llama 3 vocabulary (the test-tokenizer-0 format).

`llama3-tokenizer.inp` holds the inputs, each followed by a "\\n__ggml_vocab_test__\\n" line; `.out` holds one line of
space-separated ids per input, no BOS. llama.cpp's test tokenizes them with add_special=False, parse_special=False.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llamafoundry.model.llamacpp import LlamaCppVocab
from tests.shared_material import SHARED, require_shared

MODELS = SHARED / "models"
SEPARATOR = "\n__ggml_vocab_test__\n"


def read_cases() -> list[tuple[str, list[int]]]:
    inp, out = MODELS / "llama3-tokenizer.inp", MODELS / "llama3-tokenizer.out"
    if not inp.is_file() or not out.is_file():
        return []
    raw = inp.read_text(encoding="utf-8")
    assert raw.endswith(SEPARATOR), "every input, the last one included, is followed by the separator line"
    inputs = raw[: -len(SEPARATOR)].split(SEPARATOR)
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(inputs), "one line of ids per input"
    return [(text, [int(t) for t in line.split()]) for text, line in zip(inputs, lines, strict=False)]


CASES = read_cases()


@pytest.fixture(scope="module")
def vocab() -> Iterator[LlamaCppVocab]:
    loaded = LlamaCppVocab(require_shared(MODELS / "llama3-tokenizer.gguf", "the Llama 3 tokenizer"))
    yield loaded
    loaded.close()


def test_golden_files_are_read() -> None:
    require_shared(MODELS / "llama3-tokenizer.inp", "the Llama 3 tokenizer golden vectors")
    assert len(CASES) == 46
    assert CASES[0] == ("ied 4 ½ months", [1142, 220, 19, 220, 27154, 4038])
    assert ("", []) in CASES


@pytest.mark.parametrize("case", range(max(len(CASES), 1)))
def test_tokenize_matches_golden_ids(vocab: LlamaCppVocab, case: int) -> None:
    text, expected = CASES[case]
    assert vocab.tokenize(text, add_bos=False, parse_special=False) == expected


@pytest.mark.parametrize("case", range(max(len(CASES), 1)))
def test_detokenize_round_trips(vocab: LlamaCppVocab, case: int) -> None:
    text, expected = CASES[case]
    assert b"".join(vocab.token_bytes(t, special=False) for t in expected).decode("utf-8") == text


def test_special_tokens_parse_only_when_asked(vocab: LlamaCppVocab) -> None:
    text = "<|start_header_id|>user<|end_header_id|>"
    # <|start_header_id|> 128006, "user" 882, <|end_header_id|> 128007
    assert vocab.tokenize(text, add_bos=False, parse_special=True) == [128006, 882, 128007]
    assert 128006 not in vocab.tokenize(text, add_bos=False, parse_special=False)
    # <|begin_of_text|> 128000 is added by add_bos
    assert vocab.tokenize("Hi", add_bos=True, parse_special=False) == [128000, 13347]
