"""``pack_padded_sequence``'s order, and greedy decodings compared, framework-free.

PyTorch packs a batch-first (B, T, ...) batch of sequences sorted by decreasing length (its
``enforce_sorted=True``, the captioning tutorial's default) time-major: step 0 of every
sequence, then step 1 of every sequence still running, and so on. ``packed_order(lengths)`` gives
the (batch, time) index of each packed row, so a port computes its (B, T, ...) outputs and
gathers the packed rows with two index arrays: nothing at a padded position is read.

``greedy_disagreements`` compares a port's greedy token sequences with the reference's, as
``zoo.amg_agreement`` compares masks: a token that differs is allowed only where the
reference's top-2 logits at that step are a near-tie (their margin within a bound), and every
disagreement is reported with its margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Disagreement", "check_lengths", "greedy_disagreements", "packed_order", "top2_margin"]


def check_lengths(lengths: Sequence[int], batch: int, steps: int) -> tuple[int, ...]:
    """``lengths`` as ints, checked as ``pack_padded_sequence(..., enforce_sorted=True)``
    checks them (one per sequence, each in 1..steps, sorted in decreasing order): ValueError
    otherwise."""
    out = tuple(int(n) for n in lengths)
    if len(out) != batch:
        raise ValueError(f"{len(out)} lengths for a batch of {batch} sequences")
    if any(n < 1 or n > steps for n in out):
        raise ValueError(f"lengths {list(out)} must lie in 1..{steps} (the padded length)")
    if any(a < b for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(
            f"lengths {list(out)} are not sorted in decreasing order (pack_padded_sequence's "
            "enforce_sorted=True: sort the batch longest first, as the tutorial's collate_fn)"
        )
    return out


def packed_order(lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(batch indexes, time indexes) of the rows of ``pack_padded_sequence(x, lengths,
    batch_first=True, enforce_sorted=True).data``, in that order: for t = 0, 1, ..., every
    sequence b with ``lengths[b] > t``. Lengths must decrease (``check_lengths``)."""
    lengths = check_lengths(lengths, len(lengths), max(lengths, default=0))
    b_idx, t_idx = [], []
    for t in range(max(lengths, default=0)):
        running = [b for b, n in enumerate(lengths) if n > t]
        b_idx += running
        t_idx += [t] * len(running)
    return np.asarray(b_idx, np.int32), np.asarray(t_idx, np.int32)


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """The gap between the largest and the second largest logit along the last axis."""
    top = np.sort(np.asarray(logits, np.float64), axis=-1)
    return top[..., -1] - top[..., -2]


@dataclass(frozen=True)
class Disagreement:
    """The first step where sequence ``row`` of a port differs from the reference's, the
    reference's top-2 margin there and whether that is a near-tie."""

    row: int
    step: int
    reference_token: int
    port_token: int
    margin: float
    near_tie: bool


def greedy_disagreements(
    reference_ids: np.ndarray, reference_logits: np.ndarray, port_ids: np.ndarray, tie: float
) -> list[Disagreement]:
    """Every sequence whose greedy tokens (B, S) differ from the reference's, at its first
    differing step (after it the inputs differ, so later steps say nothing): the reference's
    top-2 margin of its logits (B, S, V) there, a near-tie when ``margin <= tie``."""
    ref, got = np.asarray(reference_ids), np.asarray(port_ids)
    if ref.shape != got.shape:
        raise ValueError(f"token sequences of shapes {ref.shape} and {got.shape}")
    margins = top2_margin(reference_logits)
    out = []
    for row in range(ref.shape[0]):
        differ = np.flatnonzero(ref[row] != got[row])
        if differ.size:
            s = int(differ[0])
            m = float(margins[row, s])
            out.append(Disagreement(row, s, int(ref[row, s]), int(got[row, s]), m, m <= tie))
    return out
