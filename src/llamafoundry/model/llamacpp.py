"""Every llama_cpp call of the project lives here.

llama-cpp-python's low-level names moved three times across 0.3.x (`llama_kv_cache_*`, `llama_kv_self_*`,
`llama_memory_*`); keeping them in one module makes the next rename a one-file change. The version is pinned
in pyproject.toml.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from pathlib import Path

import llama_cpp
import numpy as np

from llamafoundry.model.base import DecodeError

_backend_lock = threading.Lock()
MAX_UBATCH_TOKENS = 512  # llama.cpp's default micro-batch: compute buffers grow with it, CPU prefill speed does not
_backend_ready = False
_log_callback = None  # keep a reference: ctypes must not collect the callback while llama.cpp holds it

# KV cache element types (`--kv-cache-type`): bytes per cell of K and of V scale with them (q8_0 ~0.53x f16,
# q4_0 ~0.28x); llama.cpp stores a quantized V only with flash attention on.
KV_CACHE_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}

QUANT_TYPES = {
    "F32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
}


def _ensure_backend() -> None:
    """Initialise llama.cpp once per process and silence its logging unless LLAMAFOUNDRY_LLAMA_LOG=1."""
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return
        if os.environ.get("LLAMAFOUNDRY_LLAMA_LOG") != "1":

            @llama_cpp.llama_log_callback
            def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
                return None

            _log_callback = _quiet
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


class LlamaCppVocab:
    """A loaded GGUF vocabulary (with or without weights): tokenize, detokenize, metadata."""

    def __init__(self, path: str | Path, vocab_only: bool = True, gpu_layers: int = 0) -> None:
        _ensure_backend()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = vocab_only
        params.n_gpu_layers = gpu_layers
        if not vocab_only:
            # Read the weights instead of mapping the file: on AVX2/AVX-512 CPUs llama.cpp repacks the Q4_K
            # matrices into its own buffer (CPU_REPACK, 445 MiB of a 763 MiB Llama 3.2 1B Q4_K_M), and with mmap
            # the file pages it read them from stay resident as well. Resident size drops by that much; load
            # time and speed do not change (measured).
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ValueError(f"llama.cpp could not load {path}: is it a valid GGUF file for a supported architecture?")
        self.path = path
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(self._vocab)
        is_eog = llama_cpp.llama_vocab_is_eog
        self.eog_token_ids = frozenset(t for t in range(self.vocab_size) if is_eog(self._vocab, t))
        self._local = threading.local()  # token_bytes's buffer: the engine thread and the event loop both call it

    @property
    def bos_token_id(self) -> int:
        return llama_cpp.llama_vocab_bos(self._vocab)

    @property
    def eos_token_id(self) -> int:
        return llama_cpp.llama_vocab_eos(self._vocab)

    def token_text(self, token_id: int) -> str:
        return llama_cpp.llama_vocab_get_text(self._vocab, token_id).decode("utf-8", errors="replace")

    def n_ctx_train(self) -> int:
        """The context the model was trained for, from the GGUF's `<arch>.context_length` (llama.cpp's own
        n_ctx_train is 0 for a vocabulary-only load, which reads no hyperparameters); 0 when the file has none."""
        found = llama_cpp.llama_model_n_ctx_train(self._model)
        if found > 0:
            return int(found)
        value = self.metadata(f"{self.metadata('general.architecture') or 'llama'}.context_length")
        return int(value) if value and value.isdigit() else 0

    def tokenize(self, text: str, add_bos: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_bos, parse_special)
        if count < 0:  # buffer too small: llama.cpp returns -needed
            capacity = -count
            tokens = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_bos, parse_special)
        return list(tokens[:count])

    def token_bytes(self, token_id: int, special: bool) -> bytes:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        return buf.raw[:n]

    def is_control(self, token_id: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_control(self._vocab, token_id))

    def metadata(self, key: str) -> str | None:
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def close(self) -> None:
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None


class LlamaCppRunner(LlamaCppVocab):
    """A GGUF model with one llama.cpp context whose KV cache holds up to `max_seqs` sequences.

    Satisfies `model.base.ModelRunner`. Not thread-safe: the engine thread owns it.

    Args:
        path: the GGUF file.
        kv_size: KV cache cells shared by all sequences (tokens).
        max_seqs: distinct sequence ids.
        max_batch_tokens: most tokens per decode (llama.cpp `n_batch`).
        num_threads: CPU threads for decode and prefill (default: all cores).
        kv_unified: one pool of cells for all sequences instead of one stream of `kv_size / max_seqs` cells
            per sequence (llama.cpp's default, and llama-server's).
        flash_attn: llama.cpp's flash attention on (True), off (False) or its own choice (None: on for CPUs);
            on CPU, on is faster at short contexts and off at long ones (docs/benchmarks.md).
        gpu_layers: layers offloaded to the GPU backend llama.cpp was built with (0: none).
        kv_cache_type: element type of the cached keys and values (one of KV_CACHE_TYPES); a quantized cache
            needs flash attention, which it turns on when `flash_attn` is None.
    """

    def __init__(
        self,
        path: str | Path,
        kv_size: int,
        max_seqs: int,
        max_batch_tokens: int = 512,
        num_threads: int | None = None,
        kv_unified: bool = False,
        flash_attn: bool | None = None,
        gpu_layers: int = 0,
        kv_cache_type: str = "f16",
    ) -> None:
        if kv_cache_type not in KV_CACHE_TYPES:
            raise ValueError(f"unknown KV cache type {kv_cache_type!r}; choose one of {', '.join(KV_CACHE_TYPES)}")
        if kv_cache_type != "f16":
            if flash_attn is False:
                raise ValueError(
                    f"--kv-cache-type {kv_cache_type} needs flash attention (llama.cpp stores a quantized V cache only "
                    "with it): drop --flash-attn off, or use --kv-cache-type f16."
                )
            flash_attn = True
        super().__init__(path, vocab_only=False, gpu_layers=gpu_layers)
        head_size = llama_cpp.llama_model_n_embd(self._model) // max(1, llama_cpp.llama_model_n_head(self._model))
        if kv_cache_type != "f16" and head_size % 32:
            self.close()
            raise ValueError(
                f"--kv-cache-type {kv_cache_type} stores keys in blocks of 32 numbers, and this model's attention "
                f"heads have {head_size}: use --kv-cache-type f16 for {path}."
            )
        threads = num_threads or os.cpu_count() or 1
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = kv_size
        params.n_batch = max_batch_tokens
        params.n_ubatch = min(max_batch_tokens, MAX_UBATCH_TOKENS)  # a larger batch is computed in micro-batches
        params.n_seq_max = max_seqs
        params.n_threads = threads
        params.n_threads_batch = threads
        # One stream per sequence by default: in a unified cache every sequence's attention runs over the cells
        # of all sequences (masked), which cost 7-8% of decode speed at 16 sequences of ~100 tokens and grows
        # with context. Across streams `seq_copy` copies the whole stream buffer (tens of MB, milliseconds), so
        # forks and prefix reuse copy instead of sharing cells; the engine trims a copy with `seq_remove`.
        params.kv_unified = kv_unified
        params.type_k = params.type_v = KV_CACHE_TYPES[kv_cache_type]
        if flash_attn is not None:
            params.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            self.close()
            raise ValueError(
                f"llama.cpp could not create a context of {kv_size} tokens for {path}: lower --ctx-size or --parallel."
            )
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.kv_size = llama_cpp.llama_n_ctx(ctx)
        self.max_seqs = llama_cpp.llama_n_seq_max(ctx)
        self.kv_unified = kv_unified
        self.kv_cache_type = kv_cache_type
        # what a saved state can be loaded into: the same weights, cache type, attention layout (flash attention
        # stores V transposed or not) and number of KV streams (llama.cpp writes it into the state and checks it)
        self.state_fingerprint = "|".join(
            [file_digest(self.path), kv_cache_type, f"fa={flash_attn}", f"unified={kv_unified}",
             f"streams={1 if kv_unified else self.max_seqs}", f"llama_cpp={llama_cpp.__version__}"]
        )  # fmt: skip
        self.max_batch_tokens = max_batch_tokens
        self.num_threads = threads
        self._batch = llama_cpp.llama_batch_init(max_batch_tokens, 0, max_seqs)
        self._batch_len = 0

    def batch_clear(self) -> None:
        self._batch_len = 0

    def batch_add(self, token_id: int, pos: int, seq_ids: list[int], want_logits: bool) -> int:
        i = self._batch_len
        if i >= self.max_batch_tokens:
            raise DecodeError(f"batch is full ({self.max_batch_tokens} tokens)")
        batch = self._batch
        batch.token[i] = token_id
        batch.pos[i] = pos
        batch.n_seq_id[i] = len(seq_ids)
        row = batch.seq_id[i]
        for j, seq_id in enumerate(seq_ids):
            row[j] = seq_id
        batch.logits[i] = want_logits
        self._batch_len = i + 1
        return i

    def decode(self) -> None:
        self._batch.n_tokens = self._batch_len
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise DecodeError(f"llama_decode returned {status}", no_kv_space=status == 1)

    def logits(self, batch_index: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, batch_index)
        if not ptr:
            raise DecodeError(f"no logits for batch index {batch_index}")
        return np.ctypeslib.as_array(ptr, shape=(self.vocab_size,))

    def seq_remove(self, seq_id: int, p0: int = -1, p1: int = -1) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, p0, p1)

    def seq_copy(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Give `dst` a copy of `src`'s cells. In a unified cache the cells gain an owner. With one stream per
        sequence the copy goes through `seq_save`/`seq_load` at once: it costs what `src` holds (a 1,000-token
        sequence of a 1B model: ~2-7 ms, `bench kv`), where llama.cpp's cross-stream `seq_cp` copies every cell
        of the stream (128 MiB in f16 at 4,096 cells) however few are used, at the next decode."""
        if self.kv_unified:
            llama_cpp.llama_memory_seq_cp(self._memory, src, dst, p0, p1)
            return
        if p0 >= 0 or p1 >= 0:
            raise ValueError("with one KV stream per sequence only whole sequences are copied")
        if src == dst:
            return
        if not self.seq_load(dst, self.seq_save(src)):
            raise DecodeError(f"llama.cpp could not copy sequence {src} to {dst}")

    def seq_save(self, seq_id: int, into: bytearray | None = None) -> bytearray:
        """The KV state of one sequence (positions, keys and values of its cells) in llama.cpp's format, written
        over `into` (resized to fit) when given: memory the process already has takes a state in a tenth of the
        time fresh memory does (65 MB: 9 ms against ~230 ms once the process holds a few GB; the new pages fault
        in one by one)."""
        size = llama_cpp.llama_state_seq_get_size(self._ctx, seq_id)
        data = bytearray(size) if into is None else into
        if len(data) > size:
            del data[size:]
        elif len(data) < size:
            data.extend(bytes(size - len(data)))
        written = llama_cpp.llama_state_seq_get_data(self._ctx, _uint8_pointer(data), size, seq_id)
        if written != size:
            raise DecodeError(f"llama.cpp wrote {written} of {size} bytes of sequence {seq_id}'s state")
        return data

    def seq_load(self, seq_id: int, data: bytes | bytearray | memoryview) -> bool:
        """Replace `seq_id`'s cells with a state from `seq_save`; False (the sequence left empty) when llama.cpp
        refuses it: another model's or cache type's state, or more cells than the sequence has room for."""
        self.seq_remove(seq_id)
        if not llama_cpp.llama_state_seq_set_data(self._ctx, _uint8_pointer(data), len(data), seq_id):
            self.seq_remove(seq_id)
            return False
        return True

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        super().close()


def file_digest(path: Path, samples: int = 16, sample_bytes: int = 1 << 16) -> str:
    """A digest of a (large) file from its size and `samples` spread-out pieces: tells weights apart in
    milliseconds, where hashing a whole multi-GB GGUF would take seconds."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as file:
        for index in range(samples):
            file.seek(max(0, size - sample_bytes) * index // max(1, samples - 1))
            digest.update(file.read(sample_bytes))
    return digest.hexdigest()[:32]


def _uint8_pointer(data: bytes | bytearray | memoryview) -> ctypes._Pointer[ctypes.c_uint8]:
    """A pointer to a buffer's bytes without copying them (llama.cpp only reads a state it loads)."""
    return np.frombuffer(data, dtype=np.uint8).ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


def quantize_gguf(src: str | Path, dst: str | Path, quant: str, num_threads: int | None = None) -> None:
    """Quantize a GGUF file with llama.cpp's own quantizer (`llama_model_quantize`).

    Args:
        src: an F32/F16 GGUF.
        dst: where to write the result.
        quant: one of QUANT_TYPES (F32, F16, Q8_0, Q4_K_M).
    """
    if quant not in QUANT_TYPES:
        raise ValueError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_TYPES)}")
    _ensure_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[quant]
    params.nthread = num_threads or os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp failed to quantize {src} to {quant} (status {status})")
