"""Fixtures shared by every test folder: real tiny GGUF models built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shared_material import SHARED, require_shared


@pytest.fixture(scope="session", autouse=True)
def private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data directory of servers and commands started without --data-dir: one of this run, never the user's
    ~/.llamafoundry (another checkout's run may have migrated its store further, or left deployments in it)."""
    home = tmp_path_factory.mktemp("llamafoundry-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLAMAFOUNDRY_DATA_DIR", str(home))
        yield home


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama-architecture GGUF (tiny preset, real Llama 3 tokenizer and chat template)."""
    from llamafoundry.model.gguf_builder import build_random_gguf

    return build_random_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", preset="tiny", quant="F16")


@pytest.fixture(scope="session")
def tiny32_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny with 32-dimensional attention heads: the smallest model a quantized KV cache (q8_0, q4_0) takes."""
    from llamafoundry.model.gguf_builder import build_random_gguf

    return build_random_gguf(tmp_path_factory.mktemp("models") / "tiny-32.gguf", preset="tiny-32", quant="F16")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared(SHARED, "the reference material")
