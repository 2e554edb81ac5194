"""Laying out one step's tokens in the runner's batch: the order llama.cpp computes fastest, and the throwaway
padding tokens that make a step one pass over the weights. Split from engine.py, which decides what the step
holds (the scheduler's plan) and what happens after it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from llamafoundry.engine.scheduler import PrefillChunk, StepPlan, padding_slots
from llamafoundry.engine.sequence import Sequence
from llamafoundry.engine.speculative import assign_drafts
from llamafoundry.model.base import ModelRunner


class BatchBuilder:
    """Fills the runner's batch for a step and undoes its padding afterwards.

    Args:
        runner: the loaded model whose batch is filled.
        batch_pad: the pass size padding aims for (0: never pad; see `scheduler.padding_slots`).
        ctx_size: positions one sequence may use; a free slot already full gets no padding token.
    """

    def __init__(self, runner: ModelRunner, batch_pad: int, ctx_size: int) -> None:
        self.runner = runner
        self.batch_pad = batch_pad
        self.ctx_size = ctx_size
        self.padding: list[tuple[int, int]] = []  # (seq_id, position) of this step's throwaway tokens

    def fill(
        self,
        plan: StepPlan,
        free_slot_lengths: Callable[[], dict[int, int]],
        with_decoding: bool = True,
        with_prefill: bool = True,
    ) -> dict[int, int]:
        """Queue this step's tokens in the runner's batch (the decoding sequences', the prompt chunks', or both).
        Returns {id(sequence or request): batch index}. `free_slot_lengths`: {free sequence id: cells it holds}.

        Tokens go in ascending sequence id: with one KV stream per sequence, llama.cpp splits a batch into one
        pass over the weights per run of consecutive sequence ids in batch order (8 streams in reverse order
        decoded at half the speed of the same streams in order).
        """
        # (seq_id, what queues its token); `object`: a padding token's row index (batch_add's result) is unused
        work: list[tuple[int, Callable[[], object]]] = []
        rows: dict[int, int] = {}
        runner = self.runner

        def add_decode(seq: Sequence, pos: int) -> None:
            rows[id(seq)] = runner.batch_add(seq.output_ids[-1], pos, [seq.seq_id], True)
            for offset, token in enumerate(seq.draft, 1):  # rows follow the sequence's own: row + offset
                runner.batch_add(token, pos + offset, [seq.seq_id], True)

        def add_chunk(chunk: PrefillChunk) -> None:
            request = chunk.request
            seq_ids = [request.sequences[0].seq_id]
            last = request.num_prompt_tokens - 1
            for pos in range(chunk.start, chunk.end):
                index = runner.batch_add(request.prompt_ids[pos], pos, seq_ids, pos == last)
            request.num_computed = chunk.end
            if chunk.is_last:
                rows[id(request)] = index

        room = runner.max_batch_tokens - plan.num_tokens
        decoding = plan.decoding if with_decoding else []
        # sequences draft only when the engine gave them a drafter (speculative decoding on): else none is assigned
        num_drafted = assign_drafts(plan, room) if decoding else 0
        for request in decoding:
            base = request.num_prompt_tokens - 1
            for seq in request.live_sequences:
                work.append((seq.seq_id, partial(add_decode, seq, base + len(seq.output_ids))))
        for chunk in plan.prefill if with_prefill else []:
            work.append((chunk.request.sequences[0].seq_id, partial(add_chunk, chunk)))
        # Only beside decoding sequences: llama.cpp's first pass then takes one token of every sequence anyway,
        # whereas a one-token pad among prompt chunks alone would split their pass in two. Not beside drafts:
        # they already give the pass its rows.
        self.padding = []  # set every step: a stale entry would remove another step's cells
        if decoding and not num_drafted:
            self.padding = self._padding_for([seq_id for seq_id, _ in work], room, free_slot_lengths())
        for seq_id, pos in self.padding:
            work.append((seq_id, partial(runner.batch_add, 0, pos, [seq_id], False)))
        runner.batch_clear()
        for _, add in sorted(work, key=lambda item: item[0]):
            add()
        return rows

    def _padding_for(self, batch_seq_ids: list[int], room: int, held: dict[int, int]) -> list[tuple[int, int]]:
        """(seq_id, position) of the throwaway tokens this step gets: on free slots, after what their cells hold
        (an idle slot's cached prefix is kept; the token is removed right after the step)."""
        if self.batch_pad <= 0:
            return []
        free = {seq for seq, length in held.items() if length < self.ctx_size}
        pads = padding_slots(batch_seq_ids, free, self.runner.max_seqs, self.batch_pad)
        return [(seq, held[seq]) for seq in pads] if len(pads) <= room else []

    def drop_padding(self) -> None:
        """Remove this step's padding tokens from their slots' cells."""
        for seq_id, pos in self.padding:
            self.runner.seq_remove(seq_id, pos, -1)
        self.padding = []
