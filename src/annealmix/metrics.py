"""Per-step mix metrics for logging, with keys that drop into W&B or TensorBoard.

Keys are ``{prefix}/{kind}/{source}``:

- ``weight``: the scheduled weight w(step);
- ``share``: the realized share of the step's global batch (count / B);
- ``count``: samples of the source in the step's global batch;
- ``samples``: cumulative samples through the step;
- ``tokens``: cumulative tokens, where ``tokens_per_sample`` says a sample's length
  or the plan counts tokens itself (token modes);
- ``documents``: cumulative documents (whole-document equivalents of packed
  windows), where ``documents_per_sample`` says how many a sample holds;
- ``epochs``: passes over the source, where the plan knows its size.

Everything here follows from the plan, so every rank computes the same values
without communication. What a rank realized itself (``rank_counts``: samples, and
tokens of variable-length samples) is summed over ranks by
``annealmix.torch.all_reduce_metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import _validate
from .plan import Plan

__all__ = ["ADDITIVE", "rank_counts", "step_metrics"]

ADDITIVE = ("count", "samples", "tokens", "rank_count", "rank_tokens")  # summed across ranks


def step_metrics(
    plan: Plan,
    step: int,
    *,
    consumed: np.ndarray | None = None,
    log=None,
    offset: np.ndarray | None = None,
    tokens_per_sample: Mapping[str, int] | None = None,
    documents_per_sample: Mapping[str, float] | None = None,
    prefix: str = "mix",
) -> dict[str, float]:
    """The mix at ``step``: scheduled and realized, per source.

    Args:
        plan: the plan the run follows.
        step: the optimizer step.
        consumed: ``plan.consumed(step)`` when already known (saves a lookup).
        log: an online plan's weight log (``Stream.log``).
        offset: after a re-plan, each source's draws beyond the plan's own counts
            (``Stream.offset``): cumulative samples, tokens and epochs include them.
        tokens_per_sample: tokens in one sample of a source, by name (fixed-length
            token sources); sources not named report no tokens, unless the plan has
            lengths (token modes), which count every source's tokens.
        documents_per_sample: documents per sample of a source, by name (one for
            unpacked documents; a packed source's documents over its windows per
            epoch); sources not named report no documents.
        prefix: the first part of every key.
    """
    step = _validate.integer("step", step, minimum=0)
    if consumed is None:
        consumed = plan.consumed(step, log=log)
    before = np.asarray(consumed, dtype=np.int64)
    counts = plan.counts(step, 1, before, log=log)[0]
    after = before + counts + (0 if offset is None else np.asarray(offset, dtype=np.int64))
    weights = plan.weights_at(step, log=log)
    tokens = dict(tokens_per_sample or {})
    documents = dict(documents_per_sample or {})
    for what, given in (("tokens", tokens), ("documents", documents)):
        for name in given:
            if name not in plan.mixture.sources:
                _validate.choice(f"source in {what}_per_sample:", name, plan.mixture.sources)
    drawn = None if plan.lengths is None else plan.tokens(step + 1, log=log)
    out: dict[str, float] = {}
    b = plan.global_batch_size
    for k, name in enumerate(plan.mixture.sources):
        out[f"{prefix}/weight/{name}"] = float(weights[k])
        out[f"{prefix}/share/{name}"] = float(counts[k]) / b
        out[f"{prefix}/count/{name}"] = float(counts[k])
        out[f"{prefix}/samples/{name}"] = float(after[k])
        if drawn is not None:
            out[f"{prefix}/tokens/{name}"] = float(drawn[k])
        elif name in tokens:
            out[f"{prefix}/tokens/{name}"] = float(after[k] * tokens[name])
        if name in documents:
            out[f"{prefix}/documents/{name}"] = float(after[k] * documents[name])
        if plan.sizes is not None:
            out[f"{prefix}/epochs/{name}"] = float(after[k]) / plan.sizes[k]
    return out


def rank_counts(
    sources: np.ndarray,
    names: tuple[str, ...],
    lengths: np.ndarray | None = None,
    prefix: str = "mix",
) -> dict[str, float]:
    """What one rank loaded, per source, for all-reducing: samples, and tokens when
    ``lengths`` (each sample's token count: variable-length samples) is given."""
    ids = np.asarray(sources, dtype=np.int64).ravel()
    counts = np.bincount(ids, minlength=len(names))
    out = {f"{prefix}/rank_count/{n}": float(c) for n, c in zip(names, counts)}
    if lengths is not None:
        lengths = np.asarray(lengths, dtype=np.float64).ravel()
        if lengths.shape != ids.shape:
            raise ValueError(
                f"lengths has {lengths.size} entries for {ids.size} samples; give one per sample"
            )
        tokens = np.bincount(ids, weights=lengths, minlength=len(names))
        out |= {f"{prefix}/rank_tokens/{n}": float(t) for n, t in zip(names, tokens)}
    return out
