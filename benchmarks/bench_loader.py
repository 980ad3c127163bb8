"""The DataLoader path's mixing overhead, against a plain single-source DataLoader.

    python benchmarks/bench_loader.py [--batches 200] [--seq-len 1024] [--batch 32]

Both read the same memory-mapped uint16 token file cut into ``seq_len + 1``-token
samples, ``--batch`` samples per step on one rank, shuffled, through
``torch.utils.data.DataLoader`` with the same ``num_workers``:

- plain: one ``TokenWindows`` source, ``shuffle=True``, ``batch_size=--batch``;
- plain, batched: the same, but the dataset fetches a whole batch and stacks it in
  one copy (``__getitems__``), as annealmix's loader does: the fair baseline for the
  mixing overhead alone;
- annealmix: ``MixtureDataLoader`` over two sources (the file's two halves) with a
  cosine anneal between them, each sample carrying its source id and index.

Prints tokens per second for each and the mixing overhead against the batched
baseline (1 - annealmix / batched; negative: annealmix is faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import describe
from torch.utils.data import DataLoader, Dataset

from annealmix import Mixture, Phase, Plan, Shard, TokenWindows
from annealmix.torch import MixtureDataLoader, collated


class Batched(Dataset):
    """One source that stacks a whole batch in one copy, like annealmix's fetch."""

    def __init__(self, source: TokenWindows) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.source[i] for i in indices]))


def tokens_per_second(loader, batches: int, seq_len: int) -> float:
    it = iter(loader)
    for _ in range(min(10, batches // 10)):  # warm-up: workers started, pages touched
        next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(it)
        sample = batch["sample"] if isinstance(batch, dict) else batch
        seen += sample.shape[0] * seq_len
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=300, help="batches timed per run")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per sample")
    parser.add_argument("--batch", type=int, default=32, help="samples per batch (one rank)")
    parser.add_argument("--tokens", type=int, default=1 << 26, help="tokens in the file")
    parser.add_argument("--repeat", type=int, default=5, help="alternating runs; best kept")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.bin"
        rng = np.random.default_rng(0)
        rng.integers(0, 50257, size=args.tokens, dtype=np.uint16).tofile(path)
        tokens = np.memmap(path, dtype=np.uint16, mode="r")
        half = tokens.size // 2
        whole = TokenWindows(tokens, args.seq_len)
        parts = {
            "a": TokenWindows(tokens[:half], args.seq_len),
            "b": TokenWindows(tokens[half:], args.seq_len),
        }
        steps = (args.batches + 20) * args.repeat
        mixture = Mixture(
            weights={"a": 0.9, "b": 0.1},
            phases=[
                Phase(start_step=0, end_step=steps, weights={"a": 0.1, "b": 0.9}, schedule="cosine")
            ],
        )
        plan = Plan(
            mixture, global_batch_size=args.batch, sizes={k: len(v) for k, v in parts.items()}
        )
        one_rank = Shard(global_batch_size=args.batch)
        lines = [
            describe(),
            f"seq_len {args.seq_len}, batch {args.batch}, {args.batches} batches, "
            f"best of {args.repeat}, memory-mapped uint16 tokens",
            "",
            "| workers | plain DataLoader | plain, batched fetch | annealmix | "
            "annealmix / plain | mixing overhead vs batched |",
            "|---|---|---|---|---|---|",
        ]
        print("\n".join(lines), flush=True)
        for workers in (0, 2):
            plain, batched, mixed = 0.0, 0.0, 0.0
            for r in range(args.repeat):
                kw = dict(batch_size=args.batch, shuffle=True, num_workers=workers)
                g = torch.Generator().manual_seed(r)
                base = DataLoader(whole, generator=g, **kw)
                plain = max(plain, tokens_per_second(base, args.batches, args.seq_len))
                fast = DataLoader(Batched(whole), generator=g, collate_fn=collated, **kw)
                batched = max(batched, tokens_per_second(fast, args.batches, args.seq_len))
                ours = MixtureDataLoader(parts, plan, one_rank, num_workers=workers)
                mixed = max(mixed, tokens_per_second(ours, args.batches, args.seq_len))
            lines.append(
                f"| {workers} | {plain / 1e6:.1f} M tok/s | {batched / 1e6:.1f} M tok/s "
                f"| {mixed / 1e6:.1f} M tok/s | {mixed / plain:.2f}x "
                f"| {100 * (1 - mixed / batched):+.1f}% |"
            )
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
