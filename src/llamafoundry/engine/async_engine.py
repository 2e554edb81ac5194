"""The asyncio face of the engine: one thread owns the model, asyncio queues carry results back.

The event loop never blocks on the model: `add_request` only validates and hands the request to the
engine thread; each engine step ends with at most one `call_soon_threadsafe` that delivers every output of
that step to the per-request queues.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable

from llamafoundry.engine.client import ModelInfo
from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.kv_tiers import KvTiers
from llamafoundry.engine.outputs import RequestOutput
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.engine.sequence import Request
from llamafoundry.errors import EngineUnavailableError, QueueFullError
from llamafoundry.model.base import ModelRunner

log = logging.getLogger(__name__)

_END = object()  # queued to a stream after abort, so a pending reader wakes up and stops
# prompt tokens a step takes beside decoding streams, divided among them: 256 with 1 stream, 32 with 8, the
# minimum chunk (16) from 16 streams on (docs/benchmarks.md, multi-turn)
PROMPT_TOKENS_SHARED_WHILE_DECODING = 256
# Requests sent together reach the engine 1-8 ms apart (the event loop parses, renders and tokenizes each in turn):
# a step admitting a prompt of ADMISSION_WAIT_MIN_TOKENS or more waits until none has arrived for ADMISSION_QUIET_S,
# at most ADMISSION_WAIT_S, so they are admitted together instead of the later ones waiting for the first one's
# prefill step (seconds on a CPU). Shorter prompts take a step short enough not to be worth the wait.
ADMISSION_QUIET_S = 0.010
ADMISSION_WAIT_S = 0.030
ADMISSION_WAIT_MIN_TOKENS = 128


class AsyncRequestStream:
    """Outputs of one request; satisfies `engine.client.RequestStream`."""

    def __init__(self, engine: AsyncEngine, request: Request, queue: asyncio.Queue[object]) -> None:
        self._engine = engine
        self._request = request
        self._queue = queue
        self._is_done = False

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RequestOutput]:
        try:
            while not self._is_done:
                item = await self._queue.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    self._is_done = True
                    raise item
                assert isinstance(item, RequestOutput)
                self._is_done = item.finished
                yield item
        finally:
            self.abort()

    def abort(self) -> None:
        if self._is_done:
            return
        self._is_done = True
        self._engine._submit(("abort", self._request))
        self._queue.put_nowait(_END)


class AsyncEngine:
    """EngineClient over LLMEngine.

    Args:
        load_runner: builds the ModelRunner (called on a worker thread by `start()`; loading takes seconds).
        ctx_size: positions per sequence; the runner's KV cache must hold `max_seqs * ctx_size` cells.
        max_queue: requests that may wait for a slot; beyond it `add_request` raises QueueFullError.
        describe: how to describe the model (chat template etc.), derived from the loaded runner.
        prefix_caching: share cached prompt prefixes across requests (LLMEngine's option; on by default).
        batch_pad: LLMEngine's batch padding (0: off).
        speculative_tokens: LLMEngine's prompt-lookup speculative decoding, most tokens per draft (0: off).
        default_seed: LLMEngine's seed of requests that send none (None: a random one each).
        make_kv_tiers: builds the prefix cache's host-memory and disk tiers for the loaded runner (they need its
            state fingerprint), or None for none; closed (disk writes finished) by `stop()`.
        prompt_tokens_shared_while_decoding: LLMEngine's larger prompt chunks beside few decoding streams (0: off).
    """

    def __init__(
        self,
        load_runner: Callable[[], ModelRunner],
        ctx_size: int,
        max_queue: int,
        describe: Callable[[ModelRunner], ModelInfo],
        prefix_caching: bool = True,
        batch_pad: int = 16,
        speculative_tokens: int = 0,
        default_seed: int | None = None,
        make_kv_tiers: Callable[[ModelRunner], KvTiers | None] | None = None,
        prompt_tokens_shared_while_decoding: int = PROMPT_TOKENS_SHARED_WHILE_DECODING,
    ) -> None:
        self._load_runner = load_runner
        self._make_kv_tiers = make_kv_tiers
        self._prompt_tokens_shared = prompt_tokens_shared_while_decoding
        self._kv_tiers: KvTiers | None = None
        self._ctx_size = ctx_size
        self._max_queue = max_queue
        self._describe = describe
        self._prefix_caching = prefix_caching
        self._batch_pad = batch_pad
        self._speculative_tokens = speculative_tokens
        self._default_seed = default_seed
        self._engine: LLMEngine | None = None
        self._model_info: ModelInfo | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, Request]] = []
        self._last_add = 0.0  # time.monotonic() of the newest request handed to the engine thread
        self._outbox: list[tuple[asyncio.Queue[object], object]] = []
        self._queues: dict[str, asyncio.Queue[object]] = {}
        self._ids = itertools.count()
        self._is_stopping = False

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        runner = await asyncio.to_thread(self._load_runner)
        self._model_info = self._describe(runner)
        if self._prefix_caching and self._make_kv_tiers is not None:
            self._kv_tiers = self._make_kv_tiers(runner)
        self._engine = LLMEngine(
            runner,
            self._ctx_size,
            self._max_queue,
            self._prefix_caching,
            batch_pad=self._batch_pad,
            speculative_tokens=self._speculative_tokens,
            default_seed=self._default_seed,
            kv_tiers=self._kv_tiers,
            prompt_tokens_shared_while_decoding=self._prompt_tokens_shared,
        )
        self._thread = threading.Thread(target=self._run, name="llamafoundry-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """End every in-flight stream, stop the engine thread and free the model."""
        with self._cond:
            self._is_stopping = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        for queue in self._queues.values():
            queue.put_nowait(EngineUnavailableError("The server is shutting down; retry the request."))
        self._queues.clear()
        if self._kv_tiers is not None:
            await asyncio.to_thread(self._kv_tiers.close)  # states handed to the disk tier are written
            self._kv_tiers = None
        if self._engine is not None:
            self._engine.runner.close()
            self._engine = None

    @property
    def is_ready(self) -> bool:
        return self._engine is not None and not self._is_stopping

    @property
    def model_info(self) -> ModelInfo:
        if self._model_info is None:
            raise EngineUnavailableError("The model is still loading; retry in a few seconds.")
        return self._model_info

    @property
    def speculative_counts(self) -> tuple[int, int]:
        """(drafted, accepted) tokens of prompt-lookup speculative decoding since the engine started."""
        engine = self._engine
        return (engine.num_draft_tokens, engine.num_accepted_draft_tokens) if engine else (0, 0)

    @property
    def prefix_cache_tokens(self) -> dict[str, int] | None:
        """Prompt tokens reused instead of computed since the engine started, by source (slot, ram, disk)."""
        cache = self._engine.prefix_cache if self._engine else None
        return dict(cache.num_reused_tokens) if cache else None

    @property
    def prefix_cache_computed_tokens(self) -> int | None:
        """Prompt tokens of finished requests computed because no cache held them (the prefix cache's misses)."""
        cache = self._engine.prefix_cache if self._engine else None
        return cache.num_computed_tokens if cache else None

    @property
    def prefix_cache_requests(self) -> dict[str, int] | None:
        """Finished requests by where their prompt's head came from (slot, ram, disk), or "miss"."""
        cache = self._engine.prefix_cache if self._engine else None
        return dict(cache.num_requests) if cache else None

    @property
    def prefix_cache_copy_seconds(self) -> dict[str, float] | None:
        """Seconds the engine thread spent copying KV states: from one slot to another ("slot"), and, when it has
        tiers, out of the context into them ("save") and back into a slot ("load"); time no sequence decodes."""
        cache = self._engine.prefix_cache if self._engine else None
        if cache is None:
            return None
        stats = self._kv_tiers.stats if self._kv_tiers else None
        tiers = {"save": stats.save_seconds, "load": stats.load_seconds} if stats else {}
        return {"slot": cache.slot_copy_seconds, **tiers}

    @property
    def prefix_cache_ram_bytes(self) -> int | None:
        """Bytes of saved KV states held in host memory, when the engine has that tier."""
        ram = self._kv_tiers.ram if self._kv_tiers else None
        return ram.used_bytes if ram else None

    @property
    def num_running(self) -> int:
        return self._engine.num_running if self._engine else 0

    @property
    def num_waiting(self) -> int:
        """Requests without a sequence slot: queued in the engine, or just submitted and not likely to get one."""
        return self._num_waiting_with(0)

    def _num_waiting_with(self, arriving: int) -> int:
        """Requests that would be without a slot once `arriving` more are submitted: the queued ones and the
        submitted ones compete for the free slots at the next step."""
        if self._engine is None:
            return 0
        submitted = sum(1 for kind, _ in self._inbox if kind == "add")
        free = self._engine.scheduler.num_free_slots
        return max(0, self._engine.num_waiting + submitted + arriving - free)

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of KV-cache cells holding tokens of running requests (0 to 1), for metrics.

        Read from another thread while the engine runs, so it is a close estimate, not a snapshot: forks share
        their prompt's cells (counted once), and each sequence adds its generated tokens.
        """
        engine = self._engine
        if engine is None:
            return 0.0
        capacity = engine.runner.max_seqs * self._ctx_size
        used = 0
        for request in list(engine.scheduler.running):
            used += request.num_computed + sum(len(seq.output_ids) for seq in list(request.sequences))
        return min(1.0, used / capacity) if capacity else 0.0

    # ---- EngineClient ----------------------------------------------------------------------------

    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        engine = self._require_engine()
        return engine.runner.tokenize(text, add_bos=False, parse_special=parse_special)

    def detokenize(self, token_ids: list[int]) -> str:
        runner = self._require_engine().runner
        return b"".join(runner.token_bytes(t, False) for t in token_ids).decode("utf-8", errors="replace")

    async def add_request(self, prompt_token_ids: list[int], params: SamplingParams) -> AsyncRequestStream:
        engine = self._require_engine()
        if self._num_waiting_with(1) > self._max_queue:  # only a request that would wait can find the queue full
            if self._max_queue == 0:
                raise QueueFullError("The server is busy: every sequence slot is in use, and it queues no requests "
                                     "(--max-queue 0). Retry shortly.")  # fmt: skip
            raise QueueFullError(
                f"The server is busy: {self.num_waiting} requests are already waiting. Retry shortly.",
            )
        request_id = f"req-{next(self._ids)}"
        queue: asyncio.Queue[object] = asyncio.Queue()
        request = engine.make_request(request_id, prompt_token_ids, params, self._emitter(request_id, queue))
        self._queues[request_id] = queue
        self._submit(("add", request))
        return AsyncRequestStream(self, request, queue)

    def _require_engine(self) -> LLMEngine:
        if self._engine is None or self._is_stopping:
            raise EngineUnavailableError("The model is not ready (loading or shutting down); retry shortly.")
        return self._engine

    # ---- the engine thread -----------------------------------------------------------------------

    def _submit(self, command: tuple[str, Request]) -> None:
        with self._cond:
            if command[0] == "add":
                self._last_add = time.monotonic()
            self._inbox.append(command)
            self._cond.notify()

    def _emitter(self, request_id: str, queue: asyncio.Queue[object]) -> Callable[[object], None]:
        def emit(item: object) -> None:  # runs on the engine thread
            self._outbox.append((queue, item))
            if not isinstance(item, RequestOutput) or item.finished:
                self._queues.pop(request_id, None)

        return emit

    def _run(self) -> None:
        engine = self._engine
        assert engine is not None
        while True:
            with self._cond:
                while not self._inbox and not engine.has_work and not self._is_stopping:
                    self._cond.wait()
                if self._is_stopping:
                    return
                self._gather_arrivals()
                commands, self._inbox = self._inbox, []
            for kind, request in commands:
                if kind == "add":
                    engine.add_request(request)
                elif not request.is_aborted:
                    engine.abort(request)
                    self._queues.pop(request.request_id, None)
            try:
                engine.step()
            except Exception:  # a bug must not kill the thread silently: fail what is running, keep serving
                log.exception("engine step failed")
                engine.fail_all("The engine hit an internal error; retry the request.")
            self._flush()

    def _gather_arrivals(self) -> None:
        """With a new long prompt in the inbox, wait (holding the condition) until none has arrived for
        ADMISSION_QUIET_S, at most ADMISSION_WAIT_S."""
        if not any(kind == "add" and r.num_prompt_tokens >= ADMISSION_WAIT_MIN_TOKENS for kind, r in self._inbox):
            return
        deadline = time.monotonic() + ADMISSION_WAIT_S
        while (wait := min(self._last_add + ADMISSION_QUIET_S, deadline) - time.monotonic()) > 0:
            if self._is_stopping:
                return
            self._cond.wait(wait)

    def _flush(self) -> None:
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[asyncio.Queue[object], object]]) -> None:
    for queue, item in batch:
        queue.put_nowait(item)
