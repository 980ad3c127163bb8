"""Packed documents: tokens/s and index memory, against a raw gather and Megatron's GPTDataset.

    python benchmarks/bench_packing.py [--gb 1.1] [--seq-len 2048] [--batch 64] [--batches 150]

Writes (once, reused) a Megatron ``.bin``/``.idx`` pair of ``--gb`` gigabytes of
``uint16`` tokens in documents of log-normal lengths (mean about 600 tokens, as
web text tokenizes), under ``--dir``, then reads ``--batch`` windows of
``seq_len + 1`` tokens per batch, warm (the file read once first, so that it is in
the page cache; each row the best of 3 after a warm-up), by:

- raw gather: the physical reference, ``np.stack`` of random contiguous slices
  of the memory-mapped ``.bin`` (no documents, no shuffle);
- annealmix, ``Packed.read``: the shuffled epoch's windows, a batch per call;
- annealmix, ``MixtureDataLoader``: two packed sources (the pair read as two
  names) with an anneal, through ``torch.utils.data.DataLoader``, 0 and 2 workers;
- Megatron-core's ``GPTDataset`` on the same pair, through a ``DataLoader`` with
  the same batch and workers (its index build timed separately).

Then the memory of the packing index: annealmix's per-epoch table against
Megatron's document, sample and shuffle indices, per document and per epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _machine import describe
from torch.utils.data import DataLoader

from annealmix import Mixture, Phase, Plan, Shard
from annealmix.documents import open_documents
from annealmix.packing import _BLOCK, Packed
from annealmix.torch import MixtureDataLoader


def write_pair(prefix: Path, gigabytes: float, seed: int = 0) -> None:
    """A Megatron MMIDIDX pair, written as Megatron-LM's preprocessing lays it out."""
    if Path(f"{prefix}.idx").is_file():
        return
    rng = np.random.default_rng(seed)
    total = int(gigabytes * 2**30) // 2
    lengths = []
    with open(Path(f"{prefix}.bin"), "wb") as f:
        written = 0
        while written < total:
            n = np.minimum(rng.lognormal(6.0, 1.0, 100_000).astype(np.int64) + 2, 1 << 16)
            n = n[np.cumsum(n) <= total - written] if n.sum() > total - written else n
            if n.size == 0:
                n = np.array([total - written])
            tokens = rng.integers(1, 50000, int(n.sum()), dtype=np.uint16)
            tokens[np.cumsum(n) - 1] = 0  # each document ends with its EOD
            tokens.tofile(f)
            lengths.append(n)
            written += int(n.sum())
    lengths = np.concatenate(lengths).astype("<i4")
    pointers = (np.cumsum(lengths, dtype=np.int64) - lengths) * 2
    with open(Path(f"{prefix}.idx"), "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + bytes([8]))
        f.write(lengths.size.to_bytes(8, "little") + (lengths.size + 1).to_bytes(8, "little"))
        f.write(lengths.tobytes() + pointers.astype("<i8").tobytes())
        f.write(np.arange(lengths.size + 1, dtype="<i8").tobytes())


def rate(fn, batches: int, tokens_per_batch: int, repeat: int = 3) -> float:
    """Tokens per second of ``fn(batches)``, the best of ``repeat`` after a warm-up
    (epoch tables and worker start-up excluded)."""
    fn(3)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(batches)
        best = min(best, time.perf_counter() - t)
    return batches * tokens_per_batch / best


def warm(tokens: np.ndarray) -> None:
    """Read the whole file once, so that every row finds it in the page cache."""
    for a in range(0, tokens.size, 1 << 26):
        np.asarray(tokens[a : a + (1 << 26)]).max()


def batches_of(loader):
    """A reader of ``n`` more batches from one pass over ``loader`` (for ``rate``)."""
    it = iter(loader)

    def read(n):
        for _ in range(n):
            next(it)

    return read


class _Tokenizer:
    """The two ids Megatron's GPTDataset reads from its tokenizer."""

    eod, pad, vocab_size = 0, 0, 50304
    unique_identifiers = {"class": "bench"}


def megatron_dataset(prefix: Path, seq_len: int, num_samples: int):
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import Split

    config = GPTDatasetConfig(
        random_seed=0,
        sequence_length=seq_len,
        blend=None,
        split="100,0,0",
        tokenizer=_Tokenizer(),
        reset_position_ids=True,
        reset_attention_mask=False,
        eod_mask_loss=True,
        create_attention_mask=False,
    )
    indexed = IndexedDataset(str(prefix))
    t = time.perf_counter()
    ds = GPTDataset(
        indexed, str(prefix), np.arange(len(indexed), dtype=np.int32), num_samples,
        Split.train, config,
    )  # fmt: skip
    return ds, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.1)
    parser.add_argument("--dir", default="/tmp/annealmix-bench")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=150)
    args = parser.parse_args()
    s, b = args.seq_len, args.batch
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / f"web-{round(args.gb * 1000)}mb"
    t = time.perf_counter()
    write_pair(prefix, args.gb)
    print(describe())
    docs = open_documents(str(prefix), "megatron")
    print(
        f"pair: {prefix}.bin, {docs.num_tokens / 1e6:,.0f} M tokens in {len(docs):,} documents "
        f"(mean {docs.num_tokens / len(docs):.0f} tokens); written/opened in "
        f"{time.perf_counter() - t:.1f} s; seq_len {s}, {b} windows per batch\n"
    )
    tokens = docs.parts[0][0]
    warm(tokens)
    rng = np.random.default_rng(1)
    per_batch = b * s
    rows = []

    def raw(n):
        for _ in range(n):
            starts = rng.integers(0, (tokens.size - s - 1) // s, b) * s
            np.stack([tokens[a : a + s + 1] for a in starts.tolist()]).astype(np.int64)

    rows.append(("raw gather of contiguous slices (reference)", rate(raw, args.batches, per_batch)))
    packed = Packed(docs, s, name="web")
    t = time.perf_counter()
    packed._table(0)
    table_build = time.perf_counter() - t
    k = len(packed)

    def core_one_epoch(n):
        for _ in range(n):
            packed.read(np.full(b, 1), rng.integers(0, k, b))

    rows.append(
        ("annealmix Packed.read, one epoch", rate(core_one_epoch, args.batches, per_batch))
    )
    sources = {"web": Packed(docs, s, name="web"), "more": Packed(docs, s, name="more")}
    plan = Plan(
        Mixture(weights={"web": 0.8, "more": 0.2},
                phases=[Phase(start_step=0, end_step=10**6, weights={"more": 1})]),
        global_batch_size=b, sizes={n: len(p) for n, p in sources.items()},
    )  # fmt: skip
    for workers in (0, 2):
        loader = MixtureDataLoader(
            sources, plan, Shard(rank=0, world_size=1, global_batch_size=b),
            num_workers=workers,
        )  # fmt: skip
        rows.append((f"annealmix MixtureDataLoader, {workers} workers",
                     rate(batches_of(loader), args.batches, per_batch)))  # fmt: skip
    mega = None
    try:
        mega, build = megatron_dataset(prefix, s, k)  # one epoch of samples
    except Exception as err:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        print(f"Megatron GPTDataset skipped: {type(err).__name__}: {err}")
    if mega is not None:
        for workers in (0, 2):
            loader = DataLoader(mega, batch_size=b, shuffle=False, num_workers=workers)
            rows.append((f"Megatron GPTDataset + DataLoader, {workers} workers",
                         rate(batches_of(loader), args.batches, per_batch)))  # fmt: skip
    ref = rows[0][1]
    print(f"{'reader':<48} {'M tokens/s':>11} {'vs raw gather':>14}")
    for name, r in rows:
        print(f"{name:<48} {r / 1e6:>11.1f} {r / ref:>13.2f}x")
    d = len(docs)
    ours = packed._table(0).nbytes
    print(f"\nindex memory for {d:,} documents, {k:,} windows per epoch:")
    print(
        f"  annealmix: {ours:,} bytes per epoch table ({ours / d:.3f} B/document; "
        f"{_BLOCK} documents per entry), built in {table_build:.2f} s, at most 4 kept; "
        "no per-sample index; the document index is Megatron's .idx, memory-mapped"
    )
    if mega is not None:
        doc, sample, shuffle = (
            mega.document_index.nbytes, mega.sample_index.nbytes, mega.shuffle_index.nbytes
        )  # fmt: skip
        print(
            f"  Megatron:  document index {doc:,} B ({doc / d:.2f} B/document per epoch), "
            f"sample index {sample:,} B and shuffle index {shuffle:,} B "
            f"({(sample + shuffle) / k:.1f} B/sample); built in {build:.2f} s; "
            "all of it grows with the epochs the run asks for"
        )
        print(f"  ratio per epoch (Megatron / annealmix): {(doc + sample + shuffle) / ours:,.0f}x")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
