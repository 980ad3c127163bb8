"""Megatron's own blend cache, written from an annealmix plan: unmodified Megatron trains
on the annealed schedule.

Megatron-LM blends datasets with ``BlendedDataset``: two arrays over the run's samples,
which dataset each global sample comes from and which sample of it, built once from
static weights and cached under ``--data-cache-path`` as
``{md5 of its description}-BlendedDataset-train-{dataset_index,dataset_sample_index}.npy``
beside ``...-description.txt``; a later run whose description hashes alike loads them
and builds nothing. ``write_blend_cache`` writes those arrays from a plan instead:
global sample ``i`` is the plan's position ``i`` (step ``i // B``, the position
``MegatronDataset.locate`` gives it), its dataset the position's source and its sample
the position's draw number from that source. Megatron's code names and hashes the
description itself: the builder runs here on the run's ``GPTDatasetConfig`` (its
datasets build or load their own caches, as in the run), and only ``BlendedDataset``'s
index build is replaced, for the train split, while it runs.

The run then passes the weights this returns (``--data-path``, each source's share of
the whole run, so Megatron builds every dataset with at least the samples the plan
draws from it) and the same ``--data-cache-path``, ``--split``, ``--seq-length``,
``--seed`` and tokenizer. What each sample holds stays Megatron's (its ``GPTDataset``
packs and shuffles documents its own way); how many samples of each dataset each step
holds is the plan's, exactly. A source the plan never draws is left out (Megatron
refuses a weight of 0). The blend Megatron sizes may hold a few samples past the run's
(one per dataset at most, from rounding); they repeat the last sample, and training
never reads them. Written once, on one process: 10 bytes a sample, as Megatron's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import _validate
from ..plan import Plan
from ..shard import turn
from ..stream import Stream

__all__ = ["BlendCache", "write_blend_cache"]

_CHUNK_STEPS = 4096  # steps planned and written at once: memory stays flat


@dataclasses.dataclass(frozen=True)
class BlendCache:
    """What ``write_blend_cache`` wrote: the ``--data-path`` words to train with, the
    files, the run's samples and the bytes its two arrays hold (10 a sample of the
    blend Megatron sized, at least the run's)."""

    data_path: list[str]
    files: list[Path]
    samples: int
    bytes: int

    def describe(self) -> str:
        return (f"wrote {self.samples:,} samples ({self.bytes:,} bytes) to "
                f"{self.files[0].parent}; train with --data-path {' '.join(self.data_path)} "
                f"--data-cache-path {self.files[0].parent}")  # fmt: skip


def write_blend_cache(
    plan: Plan, prefixes: Mapping[str, str], config: Any, *, num_steps: int
) -> BlendCache:
    """Write Megatron's train-split blend cache for ``num_steps`` steps of ``plan``.

    Args:
        plan: the plan (its sources named as ``prefixes``).
        prefixes: each source's Megatron pair, ``PREFIX`` of ``PREFIX.bin``/``.idx``.
        config: the run's ``megatron.core.datasets.gpt_dataset.GPTDatasetConfig``
            (Megatron-LM's ``core_gpt_dataset_config_from_args(args)``), with
            ``path_to_cache`` (``--data-cache-path``) set; its blend is replaced by
            the plan's sources and their shares.
        num_steps: optimizer steps of the run (``--train-samples`` is ``num_steps``
            times the global batch; under a batch-size ramp, the samples of those
            steps, ``plan.batch_sizes.samples_before(num_steps)``).
    """
    from megatron.core.datasets.blended_dataset import BlendedDataset
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset
    from megatron.core.datasets.utils import Split

    num_steps = plan.plan_steps(_validate.integer("num_steps", num_steps, minimum=1))
    names = plan.mixture.sources
    missing = [n for n in names if n not in prefixes]
    if missing:
        raise ValueError(f"prefixes has no Megatron pair for sources {missing[:5]}; give each "
                         "source its PREFIX (of PREFIX.bin/.idx)")  # fmt: skip
    if not config.path_to_cache:
        raise ValueError("config.path_to_cache is not set: give the run's --data-cache-path, "
                         "where Megatron looks for its blend")  # fmt: skip
    b = plan.global_batch_size
    samples = num_steps * b
    drawn = np.asarray(plan.consumed(num_steps), dtype=np.int64)
    used = np.flatnonzero(drawn)  # Megatron refuses a weight of 0
    words = [repr(float(drawn[k] / samples)) for k in used.tolist()]
    data_path = [x for k, w in zip(used.tolist(), words) for x in (w, str(prefixes[names[k]]))]
    blend = ([str(prefixes[names[k]]) for k in used.tolist()], [float(w) for w in words])
    config = dataclasses.replace(config, blend=blend, blend_per_split=None)
    dataset_of = np.full(len(names), -1, dtype=np.int64)
    dataset_of[used] = np.arange(used.size)
    written: list[Path] = []

    def build_indices(self) -> tuple[np.ndarray, np.ndarray]:
        if self.split != Split.train:  # not ours: what the run builds for itself
            return np.zeros(self.size, np.int16), np.zeros(self.size, np.int64)
        _check(self.size, samples, drawn[used], np.array([len(d) for d in self.datasets]))
        files = [Path(config.path_to_cache) /
                 f"{self.unique_description_hash}-{type(self).__name__}-{self.split.name}-{x}"
                 for x in ("description.txt", "dataset_index.npy", "dataset_sample_index.npy")]
        written.extend(_write(plan, num_steps, self.size, dataset_of, files,
                              self.unique_description))  # fmt: skip
        return (np.load(files[1], mmap_mode="r"), np.load(files[2], mmap_mode="r"))

    sizes = [samples, 1, 1]  # the train split is the run's; the others build nothing here
    with _replaced(BlendedDataset, "_build_indices", build_indices):
        BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    if not written:
        raise RuntimeError("Megatron built no train blend: does config.split give training "
                           "a part (say '100,0,0')?")  # fmt: skip
    held = np.load(written[1], mmap_mode="r").size  # the blend Megatron sized: >= samples
    return BlendCache(data_path, written, samples, 10 * held)


def _check(size: int, samples: int, drawn: np.ndarray, lengths: np.ndarray) -> None:
    """Before writing: the blend holds the run, and each dataset what the plan draws
    from it (it must, with the shares as weights; refused rather than read past)."""
    if size < samples:
        raise ValueError(f"Megatron's blend holds {size} samples, fewer than the run's {samples}")
    over = np.flatnonzero(drawn > lengths)
    if over.size:
        k = int(over[0])
        raise ValueError(f"the plan draws {int(drawn[k])} samples of Megatron dataset {k}, "
                         f"which holds {int(lengths[k])}")  # fmt: skip


def _write(plan: Plan, num_steps: int, size: int, dataset_of: np.ndarray, files: list[Path],
           description: str) -> list[Path]:  # fmt: skip
    """The description and both arrays, the plan's samples a chunk of (plan) steps at
    a time."""
    b, samples = plan.global_batch_size, num_steps * plan.global_batch_size
    os.makedirs(files[0].parent, exist_ok=True)
    files[0].write_text(description)
    index = np.lib.format.open_memmap(files[1], mode="w+", dtype=np.int16, shape=(size,))
    sample = np.lib.format.open_memmap(files[2], mode="w+", dtype=np.int64, shape=(size,))
    stream = Stream(plan)
    for start in range(0, num_steps, _CHUNK_STEPS):
        batch = stream.take(min(_CHUNK_STEPS, num_steps - start))
        steps = np.arange(start, start + len(batch.sources))
        # Global sample step * B + j is the position MegatronDataset.locate gives it.
        cols = (np.arange(b)[None, :] + turn(steps, b)[:, None]) % b
        at = slice(start * b, (start + len(steps)) * b)
        index[at] = dataset_of[np.take_along_axis(batch.sources, cols, axis=1)].ravel()
        sample[at] = np.take_along_axis(batch.draws, cols, axis=1).ravel()
    index[samples:], sample[samples:] = index[samples - 1], sample[samples - 1]
    index.flush(), sample.flush()
    return files


@contextlib.contextmanager
def _replaced(cls: type, name: str, method: Any) -> Iterator[None]:
    """``cls.name`` is ``method`` inside the block."""
    kept = cls.__dict__[name]
    setattr(cls, name, method)
    try:
        yield
    finally:
        setattr(cls, name, kept)
