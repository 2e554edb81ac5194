"""Write the trained demo model as a llama.cpp GGUF: `llama` architecture, F16 weights, then quantized."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from demo_llama import DemoConfig
from demo_tokenizer import add_gguf_metadata
from tokenizers import Tokenizer

from llamafoundry.model.llamacpp import quantize_gguf

MODEL_NAME = "llamafoundry-demo"
DESCRIPTION = (
    "A tiny Llama-architecture chat model trained from scratch by llamafoundry's tools/train_demo_model.py on "
    "generated conversations. A demo of the API, not a source of facts."
)


def write_gguf(
    path: Path, config: DemoConfig, tensors: dict[str, torch.Tensor], tokenizer: Tokenizer, quant: str, threads: int
) -> Path:
    """Write `tensors` (llama.cpp names, PyTorch [out, in] layout) to `path`, quantized to `quant` (F16 or Q8_0).

    Matrices are stored F16 and norms F32 in a temporary file next to `path`, which llama.cpp's own quantizer
    then turns into `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".f16.tmp")
    try:
        _write_f16(tmp, config, tensors, tokenizer)
        quantize_gguf(tmp, path, quant, num_threads=threads)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_f16(path: Path, config: DemoConfig, tensors: dict[str, torch.Tensor], tokenizer: Tokenizer) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(MODEL_NAME)
    writer.add_description(DESCRIPTION)
    writer.add_license("Apache-2.0")
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.n_ff)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head_kv)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_freq_base)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_gguf_metadata(writer, tokenizer)
    for name, tensor in tensors.items():
        # gguf reverses numpy's [out, in] into ggml's ne = [in, out], the order llama.cpp expects
        data = tensor.numpy()
        writer.add_tensor(name, data.astype(np.float16 if data.ndim == 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_against_llamacpp(
    path: Path, model: torch.nn.Module, tokenizer: Tokenizer, texts: list[str]
) -> dict[str, float]:
    """Load the GGUF with llama.cpp and compare it with the trainer.

    Every text must tokenize to the same ids in both; on the first few, llama.cpp's logits must pick the same
    next token as PyTorch's almost everywhere (the GGUF's weights are quantized, so values differ slightly).

    Returns:
        {"num_texts_tokenized_alike", "logits_max_abs_diff", "argmax_agreement"}.
    """
    from llamafoundry.model.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(path, kv_size=512, max_seqs=1, max_batch_tokens=512, num_threads=1)
    try:
        for text in texts:
            expected = tokenizer.encode(text).ids
            got = runner.tokenize(text, add_bos=False, parse_special=True)
            if got != expected:
                raise AssertionError(f"llama.cpp tokenizes differently from the trainer:\n{text!r}\n{expected}\n{got}")
        max_diff, agree, total = 0.0, 0, 0
        for seq_id, text in enumerate(texts[:8]):
            ids = tokenizer.encode(text).ids[:512]
            runner.batch_clear()
            for pos, token in enumerate(ids):
                runner.batch_add(token, pos, [seq_id % runner.max_seqs], True)
            runner.decode()
            ours = np.stack([runner.logits(i).copy() for i in range(len(ids))])
            runner.seq_remove(seq_id % runner.max_seqs)
            with torch.no_grad():
                theirs = model(torch.tensor([ids]))[0].float().numpy()
            max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
            agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
            total += len(ids)
    finally:
        runner.close()
    if agree / total < 0.97:
        raise AssertionError(f"llama.cpp and PyTorch agree on the next token only {agree}/{total} times")
    return {
        "num_texts_tokenized_alike": len(texts),
        "logits_max_abs_diff": round(max_diff, 4),
        "argmax_agreement": round(agree / total, 4),
    }
