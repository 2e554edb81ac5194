"""Every llama_cpp call of the project lives here.

llama-cpp-python's low-level names moved three times across 0.3.x (`llama_kv_cache_*`, `llama_kv_self_*`,
`llama_memory_*`); keeping them in one module makes the next rename a one-file change. The version is pinned
in pyproject.toml.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import llama_cpp
import numpy as np

from llamafoundry.model.base import DecodeError
from llamafoundry.model.json_closing import ClosingScores, LexState, closing_scores, json_levels_closed

_backend_lock = threading.Lock()
_grammar_lock = threading.Lock()
_GRAMMAR_CACHE_SIZE = 64
MAX_UBATCH_TOKENS = 512  # llama.cpp's default micro-batch: compute buffers grow with it, CPU prefill speed does not
_backend_ready = False
_log_callback = None  # keep a reference: ctypes must not collect the callback while llama.cpp holds it

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

    def __init__(self, path: str | Path, vocab_only: bool = True) -> None:
        _ensure_backend()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = vocab_only
        params.n_gpu_layers = 0
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
        self._piece_buf = ctypes.create_string_buffer(256)
        self._grammar_vocab: _GrammarVocab | None = None
        self._grammars: dict[str, LlamaCppGrammar] = {}  # GBNF text -> compiled prototype (clone it)

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
        buf = self._piece_buf
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

    def grammar(self, text: str) -> LlamaCppGrammar:
        """A fresh state of GBNF grammar `text` (start rule `root`) for this vocabulary.

        Compiled grammars are cached by text and cloned, so a schema sent again (the same tools on every
        request) is parsed once. Safe to call from any thread. Raises GrammarError.
        """
        with _grammar_lock:
            if self._grammar_vocab is None:
                self._grammar_vocab = _GrammarVocab(self)
            prototype = self._grammars.get(text)
            if prototype is None:
                prototype = _compile_grammar(self, self._grammar_vocab, text)
                if len(self._grammars) >= _GRAMMAR_CACHE_SIZE:
                    self._grammars.pop(next(iter(self._grammars))).close()
                self._grammars[text] = prototype
            return prototype.clone()

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
    ) -> None:
        super().__init__(path, vocab_only=False)
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
        llama_cpp.llama_memory_seq_cp(self._memory, src, dst, p0, p1)

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        super().close()


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


# llama_token_data {id, logit, p} as numpy sees it: 12 bytes, no padding, like the C struct.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GrammarError(ValueError):
    """llama.cpp could not parse a GBNF grammar."""


class _Candidates:
    """A llama_token_data_array over a numpy buffer of `size` entries (reused: the engine thread is the only user)."""

    def __init__(self, size: int) -> None:
        self.data = np.zeros(size, dtype=_TOKEN_DATA)
        self.data["id"] = np.arange(size, dtype=np.int32)
        self.array = llama_cpp.llama_token_data_array(
            data=self.data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=size,
            selected=-1,
            sorted=False,
        )
        self.ref = ctypes.byref(self.array)


class _GrammarVocab:
    """Per-vocabulary state shared by all grammars of one model: scratch candidates and the tokens never allowed."""

    def __init__(self, vocab: LlamaCppVocab) -> None:
        self.vocab = vocab
        self.full = _Candidates(vocab.vocab_size)
        self.one = _Candidates(1)
        # Control tokens other than end-of-generation ones never appear inside constrained output: their text
        # may match the grammar (llama.cpp matches a token by its text) but the detokenizer drops it.
        self.blocked = np.array(
            [t for t in range(vocab.vocab_size) if vocab.is_control(t) and t not in vocab.eog_token_ids],
            dtype=np.int64,
        )
        self.blocked_set = frozenset(int(t) for t in self.blocked)
        self.eog = np.array(sorted(vocab.eog_token_ids), dtype=np.int64)
        self._closing: ClosingScores | None = None

    def closing_scores(self) -> ClosingScores:
        """Per token: JSON levels (strings, objects, arrays, numbers) its text closes from each lexer state, its
        length, and whether it is whitespace. Computed once, on first use (about a second)."""
        if self._closing is None:
            self._closing = closing_scores(self.vocab.token_bytes(t, True) for t in range(self.vocab.vocab_size))
        return self._closing


class LlamaCppGrammar:
    """One sequence's position in a GBNF grammar: llama.cpp's grammar sampler applied to numpy logits.

    Satisfies `model.base.TokenConstraint`. Use from one thread; `clone()` gives an independent copy at the
    same position (a fork of the sequence). Built by `LlamaCppVocab.grammar(text)`.
    """

    def __init__(self, shared: _GrammarVocab, sampler: llama_cpp.llama_sampler_p) -> None:
        self._shared = shared
        # None once close() has freed it, so a second close (from __del__) does not free it twice.
        self._sampler: llama_cpp.llama_sampler_p | None = sampler
        self._lex = LexState()  # JSON lexer state of the accepted text, for closing_token

    def allows(self, token_id: int) -> bool:
        """True when `token_id` may come next (cheap: checks one candidate)."""
        if token_id in self._shared.blocked_set:
            return False
        one = self._shared.one
        one.data["id"][0] = token_id
        one.data["logit"][0] = 0.0
        llama_cpp.llama_sampler_apply(self._sampler, one.ref)
        return bool(np.isfinite(one.data["logit"][0]))

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A float32 copy of `logits` [vocab] with every token the grammar rejects at -inf (the input is kept)."""
        full = self._shared.full
        full.data["logit"] = logits
        full.data["logit"][self._shared.blocked] = -np.inf
        llama_cpp.llama_sampler_apply(self._sampler, full.ref)
        return full.data["logit"].copy()

    def accept(self, token_id: int) -> None:
        """Advance past a generated token. End-of-generation tokens end the output and are not fed to the grammar."""
        if token_id in self._shared.vocab.eog_token_ids:
            return
        llama_cpp.llama_sampler_accept(self._sampler, token_id)
        text = self._shared.vocab.token_bytes(token_id, True).decode("utf-8", errors="replace")
        _, self._lex = json_levels_closed(text, self._lex)

    def closing_token(self, logits: np.ndarray) -> int:
        """The allowed token that brings JSON output nearest its end: an end-of-generation token once the grammar is
        complete, else one that is not only whitespace, closing the most strings, objects, arrays and numbers (then
        one without a comma, the longest, the likeliest). Greedy, not a proof of the shortest completion, but JSON
        grammars close within a few tokens this way."""
        masked = self.mask(logits)
        allowed = np.flatnonzero(np.isfinite(masked))
        if allowed.size == 0:
            return int(np.argmax(masked))
        eog = np.intersect1d(allowed, self._shared.eog)
        if eog.size:
            return int(eog[0])
        scores = self._shared.closing_scores()
        closed = scores.closed_from(self._lex)[allowed]
        # the last key sorts first: text before whitespace, the most levels closed, no comma, the longest, the likeliest
        keys = (
            -masked[allowed],
            -scores.lengths[allowed],
            scores.has_comma[allowed],
            -closed,
            scores.is_blank[allowed],
        )
        order = np.lexsort(keys)
        return int(allowed[order[0]])

    def clone(self) -> LlamaCppGrammar:
        copy = LlamaCppGrammar(self._shared, llama_cpp.llama_sampler_clone(self._sampler))
        copy._lex = self._lex
        return copy

    def close(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None

    def __del__(self) -> None:
        self.close()


def _compile_grammar(vocab: LlamaCppVocab, shared: _GrammarVocab, grammar: str) -> LlamaCppGrammar:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab._vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarError("llama.cpp rejected the grammar (set LLAMAFOUNDRY_LLAMA_LOG=1 to see why)")
    return LlamaCppGrammar(shared, sampler)
