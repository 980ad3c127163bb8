"""What a stream source costs: every rank and worker reads it in full.

    python benchmarks/bench_streams.py [--items 60000] [--out benchmarks/results/FILE.md]

A Hugging Face streaming ``IterableDataset`` (4 shards, ``--items`` rows of 256
integers) mixed half and half with an in-memory source, global batch 64, through
``MixtureDataLoader`` with 0 to 3 DataLoader workers, against two named baselines:
reading the stream itself, row by row, in one process, and a plain ``DataLoader``
over the stream alone with as many workers (Hugging Face then gives each worker its
own shards, so every row is read once). A stream has no random access, so each of
annealmix's workers reads every row up to the draws the plan gives it and keeps its
own: the rows read per row used grow with the workers. Best of 3 passes.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from _machine import describe
from bench_plan import best_of
from torch.utils.data import DataLoader

from annealmix import Mixture, Plan, Shard
from annealmix.torch import MixtureDataLoader

BATCH = 64
WIDTH = 256


def stream(items: int):
    import datasets

    def rows(shards):
        for shard in shards:
            for i in range(shard, items, 4):
                yield {"x": np.full(WIDTH, i, dtype=np.int64)}

    return datasets.IterableDataset.from_generator(rows, gen_kwargs={"shards": [0, 1, 2, 3]})


def as_array(sample, source_id: int) -> np.ndarray:
    """Stream rows are dicts, memory rows arrays: one shape for the collate."""
    return np.asarray(sample["x"]) if isinstance(sample, dict) else sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60_000, help="rows in the stream")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    steps = args.items // BATCH  # half of every batch is stream rows: half the stream is read
    used = steps * BATCH // 2
    source = stream(args.items)
    memory = np.zeros((1000, WIDTH), dtype=np.int64)
    plan = Plan(
        Mixture(weights={"stream": 1, "memory": 1}),
        global_batch_size=BATCH,
        sizes={"stream": args.items, "memory": len(memory)},
        order={"stream": "sequential", "memory": "shuffle"},
    )

    def read_directly():
        for i, _ in enumerate(source):
            if i + 1 == used:
                break

    baseline = best_of(read_directly, 3, warm=False)
    lines = [
        describe(),
        f"{args.items:,} stream rows of {WIDTH} int64 in 4 shards, half of each batch of "
        f"{BATCH}; {steps:,} steps, {used:,} stream rows used",
        "",
        "| reader | stream rows used / s | rows read per row used | baseline / it |",
        "|---|---|---|---|",
        f"| baseline: the stream read directly | {used / baseline:,.0f} | 1 | 1.0x |",
    ]
    print("\n".join(lines), flush=True)
    for workers in (0, 1, 2, 3):

        def load(workers=workers):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the read-cost warning this measures
                loader = MixtureDataLoader(
                    {"stream": source, "memory": memory},
                    plan.replace(),  # a fresh plan per run: timing one again would time its caches
                    Shard(global_batch_size=BATCH),
                    num_steps=steps,
                    num_workers=workers,
                    transform=as_array,
                )
                for _ in loader:
                    pass

        def plain(workers=workers):
            loader = DataLoader(source, batch_size=BATCH // 2, num_workers=workers)
            for i, _ in enumerate(loader):
                if i + 1 == steps:
                    break

        for label, fn, reads in (
            ("plain DataLoader over the stream alone", plain, 1),
            ("MixtureDataLoader", load, max(1, workers)),
        ):
            spent = best_of(fn, 3, warm=False)
            lines.append(
                f"| {label}, {workers} worker(s) | {used / spent:,.0f} | {reads} "
                f"| {spent / baseline:.1f}x |"
            )
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
