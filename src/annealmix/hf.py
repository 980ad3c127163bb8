"""Hugging Face ``datasets``: a mixture as one dataset, in the plan's exact order.

``mix_datasets({"web": web, "code": code}, plan, num_steps=N)`` is what
``interleave_datasets`` users reach for when the mix should anneal: the rows of
every global batch of steps ``[0, N)``, in stream order (one shard's rows with
``shard=``), with a ``source`` column (a ``ClassLabel`` of the source names).

- Map-style sources (``datasets.Dataset``) give a ``datasets.Dataset``: the sources
  concatenated, then ``select``-ed in the plan's order, so nothing is copied (its
  indices mapping costs 8 bytes per row of the run) and every ``datasets``
  operation works on it (``map``, ``with_format("torch")``, ``to_iterable_dataset``).
- Any streaming source (``datasets.IterableDataset``, or any iterable) gives a
  ``datasets.IterableDataset`` generated in the same order; draw ``d`` of a stream
  is its ``d``-th row, read whole in order (a stream has no random access). Its
  own ``state_dict()`` / ``load_state_dict()`` resume it (by skipping the rows
  already yielded: HF re-runs the generator).

Row ``r`` of the result is position ``r % (rows per step)`` of step
``r // (rows per step)`` of this shard. The order *is* the mix: a trainer must not
shuffle it (``transformers.Trainer`` shuffles a map-style train dataset: give it
``result.to_iterable_dataset()``), and must not split it into contiguous blocks per
rank (``datasets.distributed.split_dataset_by_node`` does that to a map-style
dataset: each rank would train on a different stretch of the schedule). Either
pass ``shard=`` for this rank's rows, or let the trainer take consecutive batches
round-robin (accelerate's default), whose union is every global batch.

For pre-training at scale, ``annealmix.torch.MixtureDataLoader`` keeps nothing per
row of the run and resumes from a small state; this module is for the
``datasets`` pipelines that fine-tuning and evaluation runs are built on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import _validate
from .plan import Plan
from .reading import StreamReader, read_step
from .shard import Shard
from .stream import MicroBatch, Stream

__all__ = ["mix_datasets", "validation_set"]


def mix_datasets(
    datasets: Mapping[str, Any],
    plan: Plan,
    *,
    num_steps: int,
    shard: Shard | None = None,
    source_column: str = "source",
) -> Any:
    """The rows of ``shard`` (default: every global batch) for steps [0, num_steps),
    in the plan's order, as one Hugging Face dataset (see the module doc).

    Args:
        datasets: each source's ``datasets.Dataset`` or ``IterableDataset`` (or any
            iterable of row dicts) by name; every source's rows have the same columns.
        plan: the plan; its sizes are the map-style sources' lengths (a stream's
            size is how many rows it has, for its epochs).
        num_steps: the steps to cover.
        shard: one rank's part of every batch (``annealmix.Shard``).
        source_column: the name of the added column of source ids (a ``ClassLabel``).
    """
    import datasets as hf

    num_steps = _validate.integer("num_steps", num_steps, minimum=1)
    names = plan.mixture.sources
    for name in datasets:
        _validate.choice("source in datasets:", name, names)
    missing = [n for n in names if n not in datasets]
    if missing:
        raise ValueError(f"datasets has no entry for source {missing[0]!r}; give every source")
    if plan.sizes is None:
        raise ValueError("mix_datasets needs the plan's sizes: Plan(..., sizes={name: rows})")
    ordered = [datasets[n] for n in names]
    for name, ds, size in zip(names, ordered, plan.sizes):
        if isinstance(ds, hf.Dataset) and len(ds) != size:
            raise ValueError(
                f"source {name!r} has {len(ds):,} rows, the plan says {size:,}; build the plan "
                "with sizes={name: len(dataset)}"
            )
        features = _features(ds)
        if features is not None and source_column in features:
            raise ValueError(
                f"source {name!r} already has a column {source_column!r}; pass another "
                "source_column="
            )
    _check_features(names, ordered)
    stream = Stream(plan, shard, num_steps=num_steps)
    label = hf.ClassLabel(names=list(names))
    if all(isinstance(ds, hf.Dataset) for ds in ordered):
        return _selected(hf, ordered, stream, plan, source_column, label)
    return _generated(hf, ordered, stream, source_column, label)


def validation_set(
    datasets: Mapping[str, Any], plan: Plan, *, source_column: str = "source"
) -> Any:
    """Each source's held-out rows, one source after another, with the ``source``
    column (ids in the plan's order): a validation set whose loss ``MixtureTrainer``
    reports per source. ``datasets`` names some or all of the plan's sources
    (``datasets.Dataset`` each, with the same columns)."""
    import datasets as hf

    names = plan.mixture.sources
    for name in datasets:
        _validate.choice("source in datasets:", name, names)
        if not isinstance(datasets[name], hf.Dataset):
            raise TypeError(f"{name!r}: a validation set is read whole: give a datasets.Dataset, "
                            f"not {type(datasets[name]).__name__}")  # fmt: skip
    if not datasets:
        raise ValueError("datasets is empty; give at least one source's held-out rows")
    ordered = [n for n in names if n in datasets]
    _check_features(tuple(ordered), [datasets[n] for n in ordered])
    label, ids = hf.ClassLabel(names=list(names)), {n: k for k, n in enumerate(names)}
    return hf.concatenate_datasets([
        datasets[n].add_column(source_column, [ids[n]] * len(datasets[n]), feature=label)
        for n in ordered])  # fmt: skip


def _features(ds: Any) -> Any:
    """A Hugging Face dataset's features (``None`` where unknown, or not a dataset)."""
    import datasets as hf

    return ds.features if isinstance(ds, (hf.Dataset, hf.IterableDataset)) else None


def _check_features(names: tuple[str, ...], ordered: list[Any]) -> None:
    """Refuse sources whose columns differ: one dataset has one schema."""
    known = [(n, _features(ds)) for n, ds in zip(names, ordered) if _features(ds)]
    for name, features in known[1:]:
        first, theirs = known[0]
        if features != theirs:
            mine, other = set(features), set(theirs)
            diff = sorted(mine ^ other) or sorted(k for k in mine if features[k] != theirs[k])
            raise ValueError(
                f"sources {first!r} and {name!r} have different columns or types "
                f"(they differ in {diff}); make them the same (datasets' "
                "select_columns / cast) before mixing"
            )


def _selected(hf, ordered, stream: Stream, plan: Plan, column: str, label) -> Any:
    """Map-style: the sources concatenated and selected in the plan's order."""
    offsets = np.cumsum([0, *plan.sizes[:-1]])
    tagged = []
    for k, ds in enumerate(ordered):
        ids = np.full(len(ds), k, dtype=np.int64)
        try:  # typed as it is added: a cast would rewrite the whole table
            tagged.append(ds.add_column(column, ids, feature=label))
        except TypeError:  # datasets before add_column(feature=)
            tagged.append(ds.add_column(column, ids).cast_column(column, label))
    rows = []
    while stream.step < stream.num_steps:
        batch = stream.take(4096)
        rows.append((offsets[batch.sources] + batch.indices).ravel())
    return hf.concatenate_datasets(tagged).select(np.concatenate(rows))


def _generated(hf, ordered, stream: Stream, column: str, label) -> Any:
    """Streams: a generated dataset, read in the plan's order."""
    features = next((_features(ds) for ds in ordered if _features(ds)), None)
    if features is not None:
        features = hf.Features({**features, column: label})
    # a tuple: datasets would split a list in gen_kwargs into shards
    return hf.IterableDataset.from_generator(
        _rows, gen_kwargs={"ordered": tuple(ordered), "stream": stream, "column": column,
                           "names": tuple(label.names)},
        features=features,
    )  # fmt: skip


def _rows(
    ordered: tuple[Any, ...], stream: Stream, column: str, names: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    import datasets as hf

    stream = stream.copy()  # every pass starts where the stream was handed over
    consumed = stream.consumed
    readers = {k: StreamReader(ds, int(consumed[k]), names[k])
               for k, ds in enumerate(ordered) if not isinstance(ds, hf.Dataset)}  # fmt: skip
    pending: list[MicroBatch] = []
    for mb in stream:
        pending.append(mb)
        if stream.micro == 0:  # a step is complete: its stream draws, in order
            yield from _step_rows(ordered, readers, pending, column)
            pending = []
    yield from _step_rows(ordered, readers, pending, column)


def _step_rows(ordered, readers, pending: list[MicroBatch], column: str):
    got = read_step(readers, pending)
    for mb in pending:
        for k, d, i in zip(mb.sources.tolist(), mb.draws.tolist(), mb.indices.tolist()):
            row = got[k][d] if k in readers else ordered[k][i]
            yield {**row, column: k}
