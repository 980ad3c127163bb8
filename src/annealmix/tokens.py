"""Weights in tokens over samples of varying length: ``TokenPlan``.

A packed source's samples are windows of one length, so its token share is its
sample share and an exact ``Plan`` is exact in tokens. Unpacked documents
(``annealmix.packing.Padded``, fine-tuning data) hold different numbers of tokens:
a plan in mode ``"tokens"`` reads each sample's length and keeps every source's
cumulative tokens near its token target at every step (the bound and its proof:
``annealmix._counting.tokens.Tokens``). It is a ``Plan`` in every other respect
(batches, draws, sample indices, streams, shards, states), with one difference a
user sees: a step's counts depend on the lengths of every sample before it, so a
stream's state carries the per-source deficits that make a resume O(1), and a cold
lookup of step t replays the steps before it (``benchmarks/bench_tokens.py``
measures it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .mixture import Mixture
from .plan import Plan

__all__ = ["TokenPlan"]


def TokenPlan(  # noqa: N802 - a constructor function, named as the plan it builds
    mixture: Mixture,
    *,
    global_batch_size: int,
    lengths: Mapping[str, Any],
    seed: int = 0,
    order: str | Mapping[str, str] = "shuffle",
) -> Plan:
    """A ``Plan`` whose weights count tokens, over samples of varying length:
    ``Plan(mixture, mode="tokens", lengths=lengths, ...)``.

    Args:
        mixture: the weights w(step), as token shares.
        global_batch_size: B, samples per optimizer step across all ranks.
        lengths: each source's tokens per sample, by name: an integer array over
            its sample indices, every entry >= 1 (``Padded.sample_tokens()``, or
            a constant array for windows). Its length is the source's size; the plan
            keeps it as int32 (4 bytes per sample, its only memory per sample).
        seed: as for ``Plan``.
        order: as for ``Plan``.
    """
    return Plan(mixture, global_batch_size=global_batch_size, seed=seed, mode="tokens",
                order=order, lengths=lengths)  # fmt: skip
