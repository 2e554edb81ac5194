"""GGUF files for tests that need a model's metadata and not its weights."""

from __future__ import annotations

from pathlib import Path

import gguf


def metadata_only_gguf(path: Path, context_length: int = 131072) -> Path:
    """A GGUF with Llama 3.1 8B's metadata (32 layers, 8 KV heads of 128) and no tensors: what a deployment's
    memory check reads of a real one; llama.cpp refuses to load it."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(context_length)
    writer.add_block_count(32)
    writer.add_embedding_length(4096)
    writer.add_head_count(32)
    writer.add_head_count_kv(8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
