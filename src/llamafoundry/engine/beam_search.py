"""Beam search over forked KV sequences: pick the next beams, and remap sequence ids without recompute.

Under a constraint (`response_format`, a forced tool call) each beam carries its own grammar state: it extends only
by tokens its grammar allows (scored by their log-probability under the raw logits, as unconstrained beams are), and
in the last tokens of the budget only by its closing token, so every returned beam is complete JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llamafoundry.engine.detokenizer import IncrementalDetokenizer
from llamafoundry.engine.outputs import FinishReason
from llamafoundry.engine.sampler import closing_window, log_softmax, top_k_logprobs
from llamafoundry.engine.sequence import Request, Sequence
from llamafoundry.model.base import ModelRunner


@dataclass(frozen=True)
class BeamCandidate:
    parent: int  # position of the parent beam in the current beam list
    token_id: int
    score: float  # parent's summed logprob + this token's logprob


def best_candidates(
    beam_scores: list[float],
    beam_logits: list[np.ndarray],
    width: int,
    beam_allowed: list[np.ndarray | None] | None = None,
) -> list[BeamCandidate]:
    """The 2*width best one-token extensions of the current beams, best first.

    Twice the width so that beams ending here (end of generation) can be set aside and `width` beams still
    continue. `beam_allowed[i]`, when given, is beam i's logits with the tokens its grammar refuses at -inf: its
    candidates come from those, scored under its raw logits.
    """
    candidates: list[BeamCandidate] = []
    for parent, (score, logits) in enumerate(zip(beam_scores, beam_logits, strict=True)):
        allowed = beam_allowed[parent] if beam_allowed else None
        ids, logprobs = top_k_logprobs(logits if allowed is None else allowed, 2 * width)
        if allowed is not None:
            ids = ids[np.isfinite(allowed[ids])]
            logprobs = log_softmax(logits)[ids].astype(np.float64)
        candidates.extend(BeamCandidate(parent, int(t), score + float(lp)) for t, lp in zip(ids, logprobs, strict=True))
    candidates.sort(key=lambda c: c.score, reverse=True)
    return candidates[: 2 * width]


def remap_seq_ids(
    parent_seq_ids: list[int],
    spare_seq_ids: list[int],
    children: list[int],
    copy: Callable[[int, int], None],
) -> list[int]:
    """Give each new beam a KV sequence id holding its parent's cache.

    Args:
        parent_seq_ids: seq id of each current beam.
        spare_seq_ids: ids of the request that hold no live beam.
        children: for each new beam, the position of its parent in `parent_seq_ids`.
        copy: `copy(src, dst)` replaces dst's cache with a copy of src's (the runner's rm + cp).

    Returns:
        the seq id of each new beam. The first child of a parent keeps the parent's id (no copy); other
        children take ids of parents that have no children, or spare ids, and get a copy.
    """
    childless = [sid for i, sid in enumerate(parent_seq_ids) if i not in set(children)]
    free = childless + list(spare_seq_ids)
    taken: set[int] = set()
    result = []
    for parent in children:
        sid = parent_seq_ids[parent]
        if sid not in taken:
            taken.add(sid)
            result.append(sid)
            continue
        dst = free.pop(0)
        copy(sid, dst)
        result.append(dst)
    return result


class BeamSearcher:
    """Advances the beam-search requests of one engine by a token per step.

    Each live beam holds a KV sequence id of its request; beams that continue keep or inherit ids (copies only
    where a parent has several children), so no prompt or prefix is recomputed.

    Args:
        runner: the engine's model (its KV sequences are copied and removed here).
        release_slot: gives a sequence id back to the scheduler when the request finishes.
        piece: the bytes of a token (`piece(token_id, special)`), for the choices' text.
    """

    def __init__(
        self, runner: ModelRunner, release_slot: Callable[[int], None], piece: Callable[[int, bool], bytes]
    ) -> None:
        self.runner = runner
        self._release_slot = release_slot
        self._piece = piece

    def step(self, request: Request, logits: list[np.ndarray]) -> None:
        """Extend the live beams by one token; set finished hypotheses aside; finish when done."""
        params, width = request.params, request.num_slots_needed
        beams = request.live_sequences
        allowed = [self._allowed(request, beam, row) for beam, row in zip(beams, logits, strict=True)]
        candidates = best_candidates([b.sum_logprob for b in beams], logits, width, allowed)
        keep: list[BeamCandidate] = []
        for cand in candidates:
            ends = cand.token_id in params.stop_token_ids or (
                cand.token_id in self.runner.eog_token_ids and not params.ignore_eos
            )
            if ends and len(request.finished_beams) < width:
                request.finished_beams.append(_grow(beams[cand.parent], cand.token_id, cand.score, -1))
            elif not ends and len(keep) < width:
                keep.append(cand)
        seq_ids = remap_seq_ids(
            [b.seq_id for b in beams], request.spare_seq_ids, [c.parent for c in keep], self._replace_seq
        )
        new_beams = [_grow(beams[c.parent], c.token_id, c.score, sid) for c, sid in zip(keep, seq_ids, strict=True)]
        request.spare_seq_ids = [sid for sid in [b.seq_id for b in beams] + request.spare_seq_ids if sid not in seq_ids]
        for sid in request.spare_seq_ids:
            self.runner.seq_remove(sid)
        request.sequences = new_beams
        at_limit = not new_beams or len(new_beams[0].output_ids) >= request.max_new_tokens
        if len(request.finished_beams) >= width or at_limit:
            self._finish(request)

    @staticmethod
    def _allowed(request: Request, beam: Sequence, logits: np.ndarray) -> np.ndarray | None:
        """The beam's logits with what its grammar refuses at -inf (only its closing token, near the budget's end),
        or None for an unconstrained beam."""
        if beam.constraint is None:
            return None
        budget = request.max_new_tokens
        if len(beam.output_ids) < budget - closing_window(budget, request.params.closing_tokens):
            return beam.constraint.mask(logits)
        only = np.full(logits.shape, -np.inf, dtype=np.float32)
        token = beam.constraint.closing_token(logits)
        only[token] = logits[token]
        return only

    def _replace_seq(self, src: int, dst: int) -> None:
        self.runner.seq_remove(dst)
        self.runner.seq_copy(src, dst)

    def _finish(self, request: Request) -> None:
        """Rank hypotheses by mean token logprob and turn the n best into the request's choices. A grammar can leave
        fewer hypotheses than n (one closing token per beam near the budget's end): the best then repeat."""
        params = request.params
        pool = request.finished_beams + request.sequences
        pool.sort(key=lambda b: b.mean_logprob, reverse=True)
        best = [pool[i % len(pool)] for i in range(params.n)] if pool else []
        choices = [
            self._choice(request, beam, index, beam in request.finished_beams) for index, beam in enumerate(best)
        ]
        for sid in [b.seq_id for b in request.sequences if b.seq_id >= 0] + request.spare_seq_ids:
            self.runner.seq_remove(sid)
            self._release_slot(sid)
        request.spare_seq_ids = []
        request.finished_beams = []
        request.sequences = choices

    def _choice(self, request: Request, beam: Sequence, index: int, ended: bool) -> Sequence:
        """A finished choice: the beam's text rebuilt once (with stop strings applied) and all of it pending."""
        params = request.params
        detok = IncrementalDetokenizer(params.stop)
        body = beam.output_ids[:-1] if ended else beam.output_ids
        text = "".join(detok.push(self._piece(t, not params.skip_special_tokens)) for t in body)
        reason = FinishReason.STOP if ended or detok.stopped else FinishReason.LENGTH
        if not detok.stopped:
            text += detok.finish()
        choice = Sequence(index, -1, None, detok, beam.output_ids, beam.sum_logprob, reason)
        choice.pending_text = text
        choice.pending_token_ids = list(beam.output_ids)
        return choice


def _grow(parent: Sequence, token: int, score: float, seq_id: int) -> Sequence:
    # Beams share the parent's (unused) detokenizer: their text is rebuilt once, in BeamSearcher._choice.
    constraint = None
    if parent.constraint is not None and seq_id >= 0:  # a finished hypothesis (seq_id -1) walks no further
        constraint = parent.constraint.clone()
        constraint.accept(token)
    grown = Sequence(parent.index, seq_id, None, parent.detokenizer, parent.output_ids + [token], score)
    grown.constraint = constraint
    return grown
