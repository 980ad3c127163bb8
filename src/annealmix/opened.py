"""Opening a config: its files, each once, and the plan they and the fields give.

``MixConfig.open()`` (or ``open_config``) first looks for every file the config
names and refuses, listing every missing path, before reading any; then opens each
source's files once (``annealmix.packing.open_source``), takes sizes (and, where
the weights count tokens over documents, each sample's tokens) from them, builds
the plan, and checks the budget (``max_epochs``). What it returns, ``Opened``,
holds the sources and the plan; ``budget`` reports what the run reads of each.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ._progress import Progress
from .files import missing
from .mixture import Mixture
from .packing import open_source
from .plan import Plan, Point
from .sources import Source, tokens_of

__all__ = ["Opened", "budget", "budget_is_exact", "by_corpus", "open_config", "walk"]

# Steps x sources an exact budget may replay before it sums the scheduled weights
# instead: at about 110 ns per step and source (three or more sources, 2-core Intel
# Xeon, numpy alone; benchmarks/bench_plan.py), half a minute at most.
_EXACT_BUDGET = 3 * 10**8
_EXACT_TOKEN_BUDGET = 2 * 10**6  # samples a token budget walks: 2 s in Python, 0.3 s compiled


@dataclass(frozen=True)
class Opened:
    """A config opened: its sources and its plan.

    Args:
        config: the ``MixConfig`` (what the file says).
        plan: the plan the fields and the files give.
        sources: each source with files, by name, opened once (``Source``);
            sources planned by size have none.
    """

    config: Any
    plan: Plan
    sources: Mapping[str, Source]

    @property
    def plan_steps(self) -> int:
        """The run's steps as the plan counts them (``num_steps``; more under a ramp,
        ``annealmix.ramp``): what a stream over the whole run takes."""
        return self.plan.plan_steps(self.config.num_steps)


def open_config(config, *, check_budget: bool = True) -> Opened:
    """``config`` (a ``MixConfig``) opened; see the module doc."""
    absent = []
    for spec in config.sources:
        if spec.path is not None:
            absent += [f"sources.{spec.name}: {p}" for p in missing(_paths(spec, config.base),
                                                                    spec.format)]  # fmt: skip
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} file(s) the config names are missing: " + "; ".join(absent)
            + ". Relative paths are read from the config's folder"
        )  # fmt: skip
    sources = {}
    for spec in config.sources:
        if spec.path is None:
            continue
        try:
            sources[spec.name] = open_source(
                _paths(spec, config.base), spec.format, spec.seq_len, name=spec.name,
                seed=config.seed, eos_id=spec.eos_id, pack=spec.pack is not False,
                output=config.output, dtype=spec.dtype or "uint16",
                vocab_size=spec.vocab_size, truncate=bool(spec.truncate),
                **(config.megatron if spec.pack is not False else {}),
            )  # fmt: skip
        except (ValueError, FileNotFoundError) as err:
            message = str(err).removeprefix(f"{spec.name}: ")
            raise type(err)(f"sources.{spec.name}: {message}") from None
    opened = Opened(config=config, plan=_plan(config, sources),
                    sources=MappingProxyType(sources))  # fmt: skip
    if check_budget:
        budget(opened)
    return opened


def _paths(spec, base: Path) -> list[str]:
    paths = spec.path if isinstance(spec.path, list) else [spec.path]
    return [str(p if Path(p).is_absolute() else base / p) for p in paths]


def _plan(config, sources: Mapping[str, Source]) -> Plan:
    """The plan of ``config``'s fields, sized by its files: in mode ``"tokens"`` where
    the weights count tokens over samples of varying length."""
    order = {s.name: s.order or config.order for s in config.sources}
    arguments = {"global_batch_size": config.ramp or config.global_batch_size, "seed": config.seed,
                 "order": order, "corpora": config.corpora}  # fmt: skip
    if config.counts_tokens:
        lengths = {s.name: tokens_of(sources[s.name]) for s in config.sources}
        return Plan(config.mixture, mode="tokens", lengths=lengths, **arguments)
    sizes = {s.name: len(sources[s.name]) if s.name in sources else s.size
             for s in config.sources}  # fmt: skip
    sized = all(size is not None for size in sizes.values())
    return Plan(config.mixture, mode=config.mode, sizes=sizes if sized else None, **arguments)


def by_corpus(plan: Plan) -> tuple[list[str], np.ndarray]:
    """The plan's corpora (a source in none stands alone, under its own name) and the
    0/1 matrix (sources x corpora) that sums a per-source table into them: what
    ``preview`` and ``plot`` show of a list of thousands of files."""
    names = plan.mixture.sources
    groups = dict(plan.corpora or {})
    grouped = {n for members in groups.values() for n in members}
    groups |= {n: (n,) for n in names if n not in grouped}
    ids = {n: k for k, n in enumerate(names)}
    labels = sorted(groups, key=lambda c: min(ids[n] for n in groups[c]))  # in source order
    matrix = np.zeros((len(names), len(labels)))
    for j, label in enumerate(labels):
        matrix[[ids[n] for n in groups[label]], j] = 1.0
    return labels, matrix


def walk(plan: Plan, step: int, log=None) -> Point:
    """Where ``plan`` stands before ``step``, replayed in strides with a progress bar
    if that takes a while. The plan walks on from its last lookup, and the strides
    fall on its replay chunks, so they cost no more than one call; a stride of
    several chunks lets an exact plan split it across threads (the ``fast`` extra)."""
    bar = Progress(step, "steps replayed")
    stride = 32 * plan.replay_chunk
    for s in range(stride, step, stride):
        plan.point(s, log=log)
        bar.update(s)
    point = plan.point(step, log=log)
    bar.close()
    return point


def budget(opened: Opened) -> dict[str, dict[str, float | bool | None]]:
    """Each source's samples, tokens, documents and epochs by the end of training.

    Tokens are targets (``seq_len`` per window); epochs are passes over the source,
    counted in tokens where the files' token count is known (a packed source's
    windows per epoch hold a little less than the whole, so passes in windows run
    slightly ahead); documents are whole-document equivalents (passes x documents)
    for packed sources and samples for unpacked ones (whose passes are counted in
    documents). An unpacked source's tokens vary by document: where the weights
    count tokens, the plan walks them (past the exact budget, estimated from the
    mean document length); else they are not counted here.

    Exact (the plan's counts) when replaying ``num_steps`` is affordable; past
    ``_EXACT_BUDGET`` steps x sources, the scheduled targets (summed weights, which
    the exact counts follow within one sample), marked ``"exact": False``. Warns when
    a source is read more than ``warn_epochs`` times; raises when a source with
    ``max_epochs`` cannot supply its share within that many passes.
    """
    config, plan, steps = opened.config, opened.plan, opened.plan_steps
    exact = budget_is_exact(opened)
    drawn = None  # a token plan's tokens per source
    if plan.lengths is not None:
        if exact:
            consumed = walk(plan, steps).counts
            drawn = plan.tokens(steps)
        else:  # samples in proportion to token share over mean tokens per sample
            means = np.array([a.mean() for a in plan.lengths])
            consumed = plan.global_batch_size * _summed_weights(
                plan.mixture, steps, lambda w: _sample_shares(w, means)
            )
            drawn = consumed * means
    elif exact:
        consumed = walk(plan, steps).counts
    else:
        consumed = plan.global_batch_size * _summed_weights(plan.mixture, steps)
    out = {}
    for k, spec in enumerate(config.sources):
        source = opened.sources.get(spec.name)
        num_tokens = None if source is None else source.num_tokens
        docs = None if source is None or source.documents is None else len(source.documents)
        samples = int(consumed[k]) if exact else float(consumed[k])
        epochs = None if plan.sizes is None else samples / plan.sizes[k]
        tokens = documents = None
        if spec.windows:  # a sample is seq_len tokens of targets
            tokens = samples * spec.seq_len
            if num_tokens:  # passes counted in tokens, as the files hold them
                epochs = tokens / num_tokens
        elif drawn is not None:  # an unpacked source's documents vary
            tokens = int(drawn[k]) if exact else float(drawn[k])
        if docs is not None and epochs is not None:
            documents = epochs * docs if spec.windows else samples
        out[spec.name] = {
            "samples": samples,
            "tokens": tokens,
            "documents": documents,
            "epochs": epochs,
            "exact": exact,
        }
        if epochs is None:
            continue
        if spec.max_epochs is not None and epochs > spec.max_epochs:
            raise ValueError(
                f"source {spec.name!r} cannot supply its share: the plan takes {samples:,.0f} "
                f"samples, {epochs:.3g} passes over its {plan.sizes[k]:,}, above its "
                f"max_epochs = {spec.max_epochs:g}; give it more data, a lower weight, "
                "or fewer steps"
            )
        if epochs > config.warn_epochs:
            warnings.warn(
                f"source {spec.name!r} is read {epochs:.3g} times (warn_epochs = "
                f"{config.warn_epochs:g}); repeated data loses value after a few epochs",
                stacklevel=2,
            )
    return out


def budget_is_exact(opened: Opened) -> bool:
    """Whether ``budget`` replays the plan (else it sums the scheduled weights)."""
    config, plan, steps = opened.config, opened.plan, opened.plan_steps
    if plan.mode not in ("exact", "tokens"):
        return False
    if plan.lengths is not None:  # a walk over every sample
        return steps * plan.global_batch_size <= _EXACT_TOKEN_BUDGET
    return steps * len(config.sources) <= _EXACT_BUDGET


def _sample_shares(weights: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Token shares -> the sample shares that give them at these mean sample lengths."""
    per_token = weights / means
    return per_token / per_token.sum(axis=-1, keepdims=True)


def _summed_weights(mixture: Mixture, num_steps: int, per_step=None) -> np.ndarray:
    """sum of w(s) (or of ``per_step(w(s))``, rows to rows) over s < num_steps: held
    segments exactly, moving ones on a grid of at most 10^6 points per segment
    (trapezoids; schedules are smooth or steps)."""
    f = (lambda w: w) if per_step is None else per_step
    total = np.zeros(mixture.num_sources)
    for seg in mixture.segments():
        stop = num_steps if seg.stop is None else min(seg.stop, num_steps)
        if stop <= seg.start:
            continue
        if seg.weights is not None:
            total += f(seg.weights) * (stop - seg.start)
            continue
        if stop - seg.start <= 10**6:
            total += f(mixture.weights_at(np.arange(seg.start, stop))).sum(axis=0)
            continue
        grid = np.unique(np.linspace(seg.start, stop - 1, 10**6).round().astype(np.int64))
        w = f(mixture.weights_at(grid))
        total += (0.5 * (w[1:] + w[:-1]) * np.diff(grid)[:, None]).sum(axis=0) + w[0]
    return total
