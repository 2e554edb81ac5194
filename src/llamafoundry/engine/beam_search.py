"""Beam search over forked KV sequences: pick the next beams, and remap sequence ids without recompute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llamafoundry.engine.sampler import top_k_logprobs


@dataclass(frozen=True)
class BeamCandidate:
    parent: int  # position of the parent beam in the current beam list
    token_id: int
    score: float  # parent's summed logprob + this token's logprob


def best_candidates(beam_scores: list[float], beam_logits: list[np.ndarray], width: int) -> list[BeamCandidate]:
    """The 2*width best one-token extensions of the current beams, best first.

    Twice the width so that beams ending here (end of generation) can be set aside and `width` beams still
    continue.
    """
    candidates: list[BeamCandidate] = []
    for parent, (score, logits) in enumerate(zip(beam_scores, beam_logits, strict=True)):
        ids, logprobs = top_k_logprobs(logits, 2 * width)
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
