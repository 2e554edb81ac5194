"""Multi-turn conversations driven through an LLMEngine step by step, as chat clients send them: the whole
history each turn, conversations taking turns in rounds, a fixed number in flight."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.sequence import Request
from llamafoundry.model.base import ModelRunner

from .test_engine_scheduling import Collector, run_until_done, submit


@dataclass
class Turn:
    conversation: int
    index: int  # 0 for a conversation's first turn
    prompt: list[int]
    answer: list[int]
    num_cached_tokens: int


def run_conversations(
    engine: LLMEngine,
    num_conversations: int,
    concurrency: int,
    num_turns: int = 3,
    header: int = 10,
    first_len: int = 40,
    turn_len: int = 10,
    answer_len: int = 4,
    vocab: int = 38,
    seed: int = 0,
    rerender: Callable[[list[int]], list[int]] = list,
) -> list[Turn]:
    """Every conversation's turn 1, then every turn 2, ... with at most `concurrency` requests in flight (the
    next one is sent as one finishes). Prompts share a `header` (the chat template's system header) and then
    differ; each turn resends the history with the engine's own answer, as `rerender` gives it back (a chat
    template may write an answer with other tokens than were generated)."""
    rng = random.Random(seed)
    head = [rng.randrange(1, vocab) for _ in range(header)]
    history = {c: list(head) for c in range(num_conversations)}
    order = [(c, t) for t in range(num_turns) for c in range(num_conversations)]
    in_flight: dict[tuple[int, int], tuple[Request, Collector, list[int]]] = {}
    turns: list[Turn] = []
    for _ in range(100_000):
        while order and len(in_flight) < concurrency:
            c, t = order.pop(0)
            prompt = history[c] + [rng.randrange(1, vocab) for _ in range(first_len if t == 0 else turn_len)]
            request, sink = submit(engine, prompt, temperature=0.0, max_tokens=answer_len, ignore_eos=True)
            in_flight[(c, t)] = (request, sink, prompt)
        if not in_flight:
            return turns
        engine.step()
        for (c, t), (request, sink, prompt) in list(in_flight.items()):
            if sink.finished:
                del in_flight[(c, t)]
                answer = sink.token_ids()[0]
                history[c] = prompt + rerender(answer)
                turns.append(Turn(c, t, prompt, answer, request.num_cached_tokens))
    raise AssertionError("the conversations did not finish")


def cold_answer(prompt: list[int], max_tokens: int, runner_factory: Callable[[], ModelRunner]) -> list[int]:
    """The answer of an engine with no cache at all (the reference every cached run must equal)."""
    engine = LLMEngine(runner_factory(), ctx_size=512, max_queue=8)
    _, sink = submit(engine, prompt, temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    run_until_done(engine)
    return sink.token_ids()[0]
