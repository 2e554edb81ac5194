"""The synchronous engine: one `step()` = schedule, run one llama_batch, sample and emit.

Only the engine thread calls into this class (see async_engine.py for the thread and the asyncio side).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator

import numpy as np

from llamafoundry.engine.admission import check_request
from llamafoundry.engine.batch import BatchBuilder
from llamafoundry.engine.beam_search import BeamSearcher
from llamafoundry.engine.constraint import ConstraintVocab
from llamafoundry.engine.detokenizer import IncrementalDetokenizer
from llamafoundry.engine.kv_tiers import KvTiers
from llamafoundry.engine.outputs import FinishReason, RequestOutput, TokenLogprob, TopLogprob
from llamafoundry.engine.prefix_cache import PrefixCache
from llamafoundry.engine.sampler import TokenSampler, choice_seed, token_logprob
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.engine.scheduler import Scheduler, StepPlan
from llamafoundry.engine.sequence import Request, RequestStatus, Sequence
from llamafoundry.engine.speculative import NgramDrafter
from llamafoundry.errors import GenerationError
from llamafoundry.model.base import DecodeError, ModelRunner

log = logging.getLogger(__name__)


class LLMEngine:
    """Continuous batching over one ModelRunner.

    Args:
        runner: the loaded model; its KV cache must hold `runner.max_seqs * ctx_size` cells.
        ctx_size: positions one sequence may use (prompt + completion).
        max_queue: requests that may wait for a slot before `add_request` refuses more.
        prefix_caching: share cached prompt prefixes across requests (see prefix_cache.py); finished sequences
            then keep their cells in their free slots until a new request reuses or wipes them.
        max_prefill_tokens: most prompt tokens computed in one step while more prompts are being computed than
            streams decode (a burst of arrivals: computing them fast lets them decode together in full batches).
        max_prefill_tokens_while_decoding: the same once at least as many streams decode: their next tokens
            wait for the step, ~8 ms per prompt token per CPU core. Chunk size barely changes a CPU's prefill
            rate (64 to 512 tokens per chunk measured the same), so small chunks cost only extra steps.
        prompt_tokens_shared_while_decoding: while streams decode, up to this many prompt tokens per step divided
            by the number of decoding streams, when more than `max_prefill_tokens_while_decoding` (0: off). A
            chunk beside decoding streams is a second pass over the weights, so 16-token chunks cost ~2x per
            token what larger ones do; with few streams the larger chunks hold up few.
        batch_pad: give free sequence slots a throwaway token so a step just short of this many sequences, or
            split into several runs of sequence ids, runs as one pass of this many (see
            `scheduler.padding_slots`); 0 turns it off. 16 suits llama.cpp's CPU kernels on x86 (AVX2).
        speculative_tokens: prompt-lookup speculative decoding: up to this many tokens guessed from a sequence's
            own prompt and output are checked in its step (see speculative.py); 0 turns it off.
        default_seed: the sampling seed of requests that send none (None: a random one for each). A fixed one
            makes a repeated request give the same answer, as llama-server's --seed does.
        kv_tiers: with prefix caching, where states go when their slots are needed and come back from (host
            memory, disk; kv_tiers.py); None keeps prefixes in the idle slots only.
    """

    def __init__(
        self,
        runner: ModelRunner,
        ctx_size: int,
        max_queue: int,
        prefix_caching: bool = False,
        max_prefill_tokens: int = 512,
        max_prefill_tokens_while_decoding: int = 16,
        prompt_tokens_shared_while_decoding: int = 0,
        batch_pad: int = 16,
        speculative_tokens: int = 0,
        kv_tiers: KvTiers | None = None,
        default_seed: int | None = None,
    ) -> None:
        self.runner = runner
        self.ctx_size = ctx_size
        self.scheduler = Scheduler(
            runner.max_seqs,
            runner.max_batch_tokens,
            max_queue,
            min(max_prefill_tokens, runner.max_batch_tokens),
            min(max_prefill_tokens_while_decoding, runner.max_batch_tokens),
            prompt_tokens_shared_while_decoding,
        )
        self.prefix_cache = PrefixCache(runner, tiers=kv_tiers) if prefix_caching else None
        self.speculative_tokens = speculative_tokens
        self.default_seed = default_seed
        self.num_draft_tokens = 0  # drafted tokens checked so far (speculative decoding)
        self.num_accepted_draft_tokens = 0  # of those, the ones the sampler chose too
        self.batch = BatchBuilder(runner, batch_pad, ctx_size)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self.beams = BeamSearcher(runner, self.scheduler.release_slot, self._piece)
        self.constraints = ConstraintVocab(runner)  # grammars of constrained requests (response_format, tools)

    # ---- admission -------------------------------------------------------------------------------

    def make_request(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams, emit: Callable[[object], None]
    ) -> Request:
        max_new = check_request(prompt_ids, params, self.ctx_size, self.runner)
        seed = params.seed if params.seed is not None else self.default_seed
        if seed is None:
            seed = secrets.randbits(63)
        return Request(request_id, list(prompt_ids), params, max_new, seed, emit)

    def add_request(self, request: Request) -> None:
        self.scheduler.add(request)

    def abort(self, request: Request) -> None:
        """Stop a request now and free its sequences; emits nothing (its reader is gone)."""
        request.is_aborted = True
        self._release(request)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # ---- one step --------------------------------------------------------------------------------

    def step(self) -> None:
        cache = self.prefix_cache
        for request, slots in self.scheduler.admit():
            with self._contained(request, slots):
                if cache:
                    cache.claim(request, slots, self.scheduler.free_slots, self.scheduler.running)
                self._allocate(request, slots)
        if cache:
            cache.share(self.scheduler.running)
        plan = self.scheduler.plan()
        if plan.is_empty:
            return
        try:
            apart = bool(plan.prefill) and any(request.live_sequences for request in plan.decoding)
            prompt_logits = self._compute_prompts_apart(plan) if apart else {}
            rows = self.batch.fill(plan, self._free_slot_lengths, with_prefill=not apart)
            self.runner.decode()
        except DecodeError as exc:
            self.batch.drop_padding()
            self._fail(plan, GenerationError(f"The model failed to process the batch ({exc}). Retry the request."))
            return
        self.batch.drop_padding()
        self._postprocess(plan, rows, prompt_logits)

    def _compute_prompts_apart(self, plan: StepPlan) -> dict[int, np.ndarray]:
        """Compute the step's prompt chunks in a llama.cpp call of their own, before the decoding sequences' tokens;
        returns {id(request): logits} of the prompts this step finishes (the next call overwrites llama.cpp's).

        Why: beside one-token rows of decoding sequences, llama.cpp computed a prompt chunk ~1.4x slower than the
        same two batches in two calls (7 decoding streams and a 64-token chunk at 1,000 tokens of context: 973 ms
        against 681 ms on 2 AMD EPYC cores, `bench shapes`; docs/benchmarks.md). The decode rows are a pass of
        their own either way: llama.cpp's first pass over a mixed batch takes one token of every sequence.
        """
        rows = self.batch.fill(plan, self._free_slot_lengths, with_decoding=False)
        self.runner.decode()
        return {key: self.runner.logits(row).copy() for key, row in rows.items()}

    def _free_slot_lengths(self) -> dict[int, int]:
        """{free sequence id: cells its idle cached prefix holds}, for a step's padding tokens (batch.py)."""
        cache = self.prefix_cache
        return {seq: cache.cached_length(seq) if cache else 0 for seq in self.scheduler.free_slots}

    def _allocate(self, request: Request, slots: list[int]) -> None:
        """Create the sequences of an admitted request on its slots."""
        params = request.params
        grammar = self.constraints.compile(params.grammar) if params.grammar is not None else None
        if params.use_beam_search:
            # One beam is born from the prompt; the other slots wait for its forks.
            first = Sequence(0, slots[0], None, IncrementalDetokenizer(params.stop), constraint=grammar)
            request.sequences.append(first)
            request.spare_seq_ids = slots[1:]
            return
        banned = self.runner.eog_token_ids if params.ignore_eos else ()
        for index, seq_id in enumerate(slots):
            # every choice walks the grammar on its own: a fork gets its own copy of the state
            constraint = grammar.clone() if grammar is not None and index else grammar
            sampler = TokenSampler(
                params, choice_seed(request.seed, index), banned, constraint, request.max_new_tokens, request.prompt_ids
            )
            drafter = NgramDrafter(self.speculative_tokens) if self.speculative_tokens else None
            detokenizer = IncrementalDetokenizer(params.stop)
            request.sequences.append(Sequence(index, seq_id, sampler, detokenizer, drafter=drafter))

    def _postprocess(self, plan: StepPlan, rows: dict[int, int], prompt_logits: dict[int, np.ndarray]) -> None:
        for request in plan.decoding:
            with self._contained(request):
                if request.params.use_beam_search:
                    self.beams.step(request, [self.runner.logits(rows[id(s)]) for s in request.live_sequences])
                else:
                    for seq in request.live_sequences:
                        self._sample_drafted(request, seq, rows[id(seq)])
                self._publish(request)
        for chunk in plan.prefill:
            if chunk.is_last:
                with self._contained(chunk.request):
                    key = id(chunk.request)
                    logits = prompt_logits[key] if key in prompt_logits else self.runner.logits(rows[key])
                    self._start_decoding(chunk.request, logits)
                    self._publish(chunk.request)

    def _start_decoding(self, request: Request, logits: np.ndarray) -> None:
        """The prompt is in the cache of the first sequence: fork it to the others and sample their first token."""
        request.status = RequestStatus.DECODING
        if request.params.use_beam_search:
            self.beams.step(request, [logits])
            return
        first = request.sequences[0].seq_id
        for seq in request.sequences[1:]:
            self.runner.seq_copy(first, seq.seq_id)
        for seq in request.sequences:
            self._sample(request, seq, logits)

    # ---- sampling and stopping -------------------------------------------------------------------

    def _piece(self, token_id: int, special: bool) -> bytes:
        key = (token_id, special)
        piece = self._pieces.get(key)
        if piece is None:
            piece = self._pieces[key] = self.runner.token_bytes(token_id, special)
        return piece

    def _sample(self, request: Request, seq: Sequence, logits: np.ndarray) -> None:
        params = request.params
        assert seq.sampler is not None
        token = seq.sampler.sample(logits)
        seq.sampler.accept(token)
        if params.logprobs or params.num_candidates > params.n:
            self._record_logprob(seq, logits, token, params)
        seq.output_ids.append(token)
        seq.pending_token_ids.append(token)
        self._check_stop(request, seq, token)

    def _sample_drafted(self, request: Request, seq: Sequence, row: int) -> None:
        """Sample `seq`'s next token from batch row `row`, then, while it equals the next drafted token, the one
        after it from the following row; the cells of drafted tokens not kept are removed."""
        draft, seq.draft = seq.draft, []
        seq_id = seq.seq_id
        self._sample(request, seq, self.runner.logits(row))
        kept = 0
        while kept < len(draft) and not seq.is_finished and seq.output_ids[-1] == draft[kept]:
            kept += 1
            self._sample(request, seq, self.runner.logits(row + kept))
        if draft:
            assert seq.drafter is not None
            seq.drafter.record(len(draft), kept)
            self.num_draft_tokens += len(draft)
            self.num_accepted_draft_tokens += kept
            # cells hold the prompt and every output token but the newest (sampled, not yet computed)
            self.runner.seq_remove(seq_id, request.num_prompt_tokens + len(seq.output_ids) - 1, -1)

    def _record_logprob(self, seq: Sequence, logits: np.ndarray, token: int, params: SamplingParams) -> None:
        logprob, top = token_logprob(logits, token, params.top_logprobs if params.logprobs else 0)
        seq.sum_logprob += logprob
        if params.logprobs:
            seq.pending_logprobs.append(self._token_logprob(token, logprob, top))

    def _token_logprob(self, token: int, logprob: float, top: list[tuple[int, float]]) -> TokenLogprob:
        raw = self._piece(token, True)
        tops = []
        for top_id, top_logprob in top:
            top_raw = self._piece(top_id, True)
            tops.append(TopLogprob(top_raw.decode("utf-8", errors="replace"), top_logprob, list(top_raw)))
        return TokenLogprob(raw.decode("utf-8", errors="replace"), logprob, list(raw), tops)

    def _check_stop(self, request: Request, seq: Sequence, token: int) -> None:
        params = request.params
        if token in params.stop_token_ids or (token in self.runner.eog_token_ids and not params.ignore_eos):
            self._finish_sequence(request, seq, FinishReason.STOP)
            return
        seq.pending_text += seq.detokenizer.push(self._piece(token, not params.skip_special_tokens))
        if seq.detokenizer.stopped:
            self._finish_sequence(request, seq, FinishReason.STOP)
        elif len(seq.output_ids) >= request.max_new_tokens:
            self._finish_sequence(request, seq, FinishReason.LENGTH)

    def _finish_sequence(self, request: Request, seq: Sequence, reason: FinishReason) -> None:
        if not seq.detokenizer.stopped:
            seq.pending_text += seq.detokenizer.finish()
        seq.finish_reason = reason
        if seq.seq_id >= 0:
            if self.prefix_cache:
                self.prefix_cache.retire(request, seq.seq_id, seq.output_ids)
            else:
                self.runner.seq_remove(seq.seq_id)
            self.scheduler.release_slot(seq.seq_id)
            seq.seq_id = -1

    # ---- output ----------------------------------------------------------------------------------

    def _publish(self, request: Request) -> None:
        """Emit what advanced; when every sequence is done, finish the request and drop it."""
        finished = not request.live_sequences and not request.finished_beams
        if request.params.needs_all_before_output and not finished:
            return
        sequences = request.sequences
        if finished and request.params.num_candidates > request.params.n and not request.params.use_beam_search:
            sequences = request.best_candidates()
        deltas = [seq.take_delta(index) for index, seq in enumerate(sequences) if seq.has_news]
        output = RequestOutput(
            request.request_id, deltas, request.num_prompt_tokens, request.num_completion_tokens, finished
        )
        if finished:
            request.status = RequestStatus.FINISHED
            self.scheduler.remove(request)
        if deltas or finished:
            request.emit(output)

    # ---- failure and release ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _contained(self, request: Request, slots: list[int] | None = None) -> Iterator[None]:
        """Fail `request` alone when its own work raises (allocating, sampling, detokenizing, constraining): the
        step goes on for the others. `slots`: those taken for it at admission, which its sequences may not hold."""
        try:
            yield
        except Exception as exc:
            log.exception("request %s failed; the engine goes on with the others", request.request_id)
            request.spare_seq_ids += [slot for slot in slots or () if slot not in request.seq_ids]
            self._release(request)
            request.emit(GenerationError.caused_by(exc))

    def fail_all(self, message: str) -> None:
        """Fail every request so no reader hangs: only when the engine itself fails (see `_contained`)."""
        for request in list(self.scheduler.running) + list(self.scheduler.waiting):
            self._release(request)
            request.emit(GenerationError(message))

    def _fail(self, plan: StepPlan, error: GenerationError) -> None:
        for request in plan.decoding + [chunk.request for chunk in plan.prefill]:
            self._release(request)
            request.emit(error)
        if self.prefix_cache:
            self.prefix_cache.clear()

    def _release(self, request: Request) -> None:
        for seq_id in request.seq_ids:
            self.runner.seq_remove(seq_id)
            self.scheduler.release_slot(seq_id)
        for seq in request.sequences:
            seq.seq_id = -1
        request.spare_seq_ids = []
        request.status = RequestStatus.FINISHED
        self.scheduler.remove(request)
