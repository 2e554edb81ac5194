"""Several conversations coming back at once find their history cached: in the idle slots when they are fewer
than the slots, in host memory when they are more (fake runner: scheduling and bookkeeping)."""

from __future__ import annotations

from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.host_cache import HostCache
from llamafoundry.engine.kv_tiers import KvTiers

from .conversations import Turn, cold_answer, run_conversations
from .fake_runner import FakeRunner
from .test_engine_scheduling import run_until_done, submit


def reusable(turns: list[Turn], turn: Turn) -> int:
    """What a returning turn can reuse: the previous turn's prompt and answer but the answer's last token (sampled,
    never computed)."""
    previous = next(t for t in turns if t.conversation == turn.conversation and t.index == turn.index - 1)
    return len(previous.prompt) + len(previous.answer) - 1


def assert_histories_reused_and_answers_cold(turns: list[Turn], runner_factory: object) -> None:
    returning = [t for t in turns if t.index > 0]
    assert returning
    assert [t.num_cached_tokens for t in returning] == [reusable(turns, t) for t in returning]
    for turn in turns:
        assert turn.answer == cold_answer(turn.prompt, len(turn.answer), runner_factory)  # type: ignore[arg-type]


def runner_8() -> FakeRunner:
    return FakeRunner(max_seqs=8, max_batch_tokens=64, ctx_size=512)


def test_fewer_conversations_than_slots_coming_back_together_reuse_their_whole_history() -> None:
    # 6 conversations for 8 slots, 3 at a time. Each new conversation was admitted into the slot another had just
    # left and trimmed it in place to the ~10 tokens of template header they share: turns 2 and 3 found only the
    # header (10 of 64 tokens cached) and were slower than turn 1.
    engine = LLMEngine(runner_8(), ctx_size=512, max_queue=64, prefix_caching=True)
    turns = run_conversations(engine, num_conversations=6, concurrency=3)
    assert_histories_reused_and_answers_cold(turns, runner_8)


def test_a_newcomer_sharing_only_the_header_does_not_trim_an_idle_conversation() -> None:
    runner = FakeRunner(max_seqs=2, max_batch_tokens=64, ctx_size=128)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, prefix_caching=True)
    header = [5, 6, 7, 8, 9, 10]
    first = header + [20, 21, 22, 23, 24, 25]
    _, sink = submit(engine, first, temperature=0.0, max_tokens=4)
    run_until_done(engine)
    submit(engine, header + [30, 31, 32], temperature=0.0, max_tokens=30)  # takes slot 0, the lowest free
    engine.step()
    assert engine.prefix_cache is not None and engine.prefix_cache.idle_slots == [1]  # moved, not trimmed
    returning = first + sink.token_ids()[0] + [33, 34]
    request, again = submit(engine, returning, temperature=0.0, max_tokens=4)
    run_until_done(engine)
    assert request.num_cached_tokens == len(first) + 3
    assert again.token_ids()[0] == cold_answer(returning, 4, lambda: FakeRunner(max_seqs=1, ctx_size=128))


def test_a_copied_idle_history_moves_so_slots_are_not_filled_with_duplicates() -> None:
    # 6 conversations and 8 slots: while a returning turn runs, its old slot held a duplicate of its history, so
    # 6 histories + 3 duplicates overflowed the slots and one conversation lost its history.
    runner = runner_8()
    engine = LLMEngine(runner, ctx_size=512, max_queue=64, prefix_caching=True)
    turns = run_conversations(engine, num_conversations=6, concurrency=3, num_turns=4)
    assert_histories_reused_and_answers_cold(turns, runner_8)
    assert engine.prefix_cache is not None and len(engine.prefix_cache.idle_slots) == 6


def test_more_conversations_than_slots_come_back_from_host_memory() -> None:
    # 12 conversations for 8 slots, 4 at a time, in rounds: each comes back after 11 others took turns, so any
    # per-slot policy has evicted it; the host-memory tier keeps the states its slots could not.
    runner = runner_8()
    tiers = KvTiers(HostCache(budget_bytes=1 << 20), None)
    engine = LLMEngine(runner, ctx_size=512, max_queue=64, prefix_caching=True, kv_tiers=tiers)
    turns = run_conversations(engine, num_conversations=12, concurrency=4)
    assert_histories_reused_and_answers_cold(turns, runner_8)
    assert tiers.stats.num_loads >= 12 and runner.loads
    assert tiers.ram is not None and tiers.ram.used_bytes <= tiers.ram.budget_bytes


def test_a_saved_state_evicted_while_its_slot_is_vacated_is_looked_up_again_not_a_failure() -> None:
    # Found by `bench multiturn --workload 48x5@8`: admitting a returning turn vacated its slot, whose idle history
    # went to host memory and evicted (budget full) the very state just found for the turn; loading it raised
    # KeyError and the request failed with a 500. Now the tiers are searched again, and the turn is computed.
    runner = FakeRunner(max_seqs=1, max_batch_tokens=64, ctx_size=256)
    tiers = KvTiers(HostCache(budget_bytes=500), None)  # one 43-token state (~350 bytes), not two
    engine = LLMEngine(runner, ctx_size=256, max_queue=8, prefix_caching=True, kv_tiers=tiers)
    first = list(range(100, 140))
    _, answer = submit(engine, first, temperature=0.0, max_tokens=4, ignore_eos=True)
    run_until_done(engine)
    submit(engine, list(range(200, 240)), temperature=0.0, max_tokens=4, ignore_eos=True)  # `first` to host memory
    run_until_done(engine)
    returning = first + answer.token_ids()[0] + [150, 151]
    _, again = submit(engine, returning, temperature=0.0, max_tokens=4, ignore_eos=True)
    run_until_done(engine)
    assert not again.errors
    assert again.token_ids()[0] == cold_answer(returning, 4, lambda: FakeRunner(max_seqs=1, ctx_size=256))


def test_histories_whose_answers_come_back_reworded_do_not_crowd_each_other_out_of_host_memory() -> None:
    # Llama 3's template trims an answer's leading space, so the next turn's history parts from the saved state
    # where the answer starts. Each turn's state was kept beside the last at full value, and in a budget that holds
    # every conversation's latest state these stale copies evicted other conversations' histories
    # (`bench multiturn --workload 48x5@8`: 10 % more prompt tokens computed).
    runner = runner_8()
    tiers = KvTiers(HostCache(budget_bytes=12 * 8 * 100), None)  # 12 states of up to 100 tokens (8 bytes a token)
    engine = LLMEngine(runner, ctx_size=512, max_queue=64, prefix_caching=True, kv_tiers=tiers)
    turns = run_conversations(
        engine, num_conversations=12, concurrency=4, num_turns=4, rerender=lambda a: [a[0] % 38 + 1, *a[1:]]
    )
    returning = [t for t in turns if t.index > 0]
    before = {(t.conversation, t.index + 1): t for t in turns}
    # the whole history up to where the previous answer starts, as the template rendered it
    assert [t.num_cached_tokens for t in returning] == [len(before[t.conversation, t.index].prompt) for t in returning]
