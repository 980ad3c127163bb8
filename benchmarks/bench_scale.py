"""Thousands of files: an ALCF-style data-file-list at its real size, measured.

    python benchmarks/bench_scale.py [--files 1000,4000,10000] [--step 500000]
        [--max-open 256] [--serve 4000] [--world 512] [--out FILE.md]

For each number of files: writes that many small Megatron pairs (``.bin``/``.idx``,
30 to 90 documents of 20 to 400 tokens each) in 20 corpora, and a data-file-list
of them (``weight prefix corpus``, log-normal weights), then measures, in this
process and in order:

- opening the list (``read_file_list``: every pair's index read and checked), the
  file descriptors it holds and the process's anonymous memory after it (and after
  the two batches below): what it holds beyond the files' mapped pages;
- building the plan (global batch 1024, the list's corpora) and reading the first
  step's batch through ``MegatronDataset`` (step 0);
- a resume: a fresh plan's lookup of step ``--step`` (what ``load_state_dict``
  checks), with the weights held, then the batch of that step;
- the baseline of the same lookup counting every file on its own (a plan without
  ``corpora``, as before corpora were counted in units);
- Megatron-core's C++ ``build_blending_indices`` on the same weights, timed over 10^7
  samples and projected to the samples before ``--step`` (what Megatron builds, once,
  before its first step; it caches the result on disk).

Then serving (tokens per second through ``MixtureDataLoader``) over every file of
a list against over two of its files, with windows of 128 and 2,048 tokens, under
the pool of maps and with a pool that keeps every file mapped, and ``--world``
simulated ranks, each alone in this process: its planning time per step and the
files it maps.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _machine import describe, report

from annealmix import Mixture, Plan
from annealmix.blends import read_file_list
from annealmix.files import max_open_files, release

B, SEQ, CORPORA, SERVE_BATCH, WARM = 1024, 128, 20, 256, 50


def write_pair(prefix: Path, rng: np.random.Generator) -> None:
    """A Megatron pair (MMIDIDX version 1, uint16 tokens), one sequence per document."""
    lengths = rng.integers(20, 400, int(rng.integers(30, 90))).astype("<i4")
    pointers = (np.cumsum(lengths) - lengths).astype("<i8") * 2
    rng.integers(1, 50_000, int(lengths.sum())).astype("<u2").tofile(f"{prefix}.bin")
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + bytes([8]))
        f.write(lengths.size.to_bytes(8, "little") + (lengths.size + 1).to_bytes(8, "little"))
        f.write(lengths.tobytes() + pointers.tobytes())
        f.write(np.arange(lengths.size + 1, dtype="<i8").tobytes())


def write_list(folder: Path, files: int, rng: np.random.Generator) -> Path:
    lines = []
    for i in range(files):
        corpus = f"corpus{i % CORPORA:02d}"
        prefix = folder / corpus / f"part-{i:05d}_text_document"
        prefix.parent.mkdir(exist_ok=True)
        write_pair(prefix, rng)
        lines.append(f"{rng.lognormal(0.0, 1.0):.6f} {prefix} {corpus}")
    path = folder / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def open_files() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def anon_mb() -> float:
    """The process's anonymous resident memory (RssAnon): what it holds beyond the
    mapped pages of its files, which the page cache shares and can drop."""
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("RssAnon:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def megatron_projection(weights: np.ndarray, samples: int) -> str:
    try:
        from megatron.core.datasets import helpers  # type: ignore[import-not-found]
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return f"skipped: megatron-core not importable ({type(err).__name__})"
    n, measured = weights.size, 10**7
    idx, sample_idx = np.zeros(measured, np.int16), np.zeros(measured, np.int64)
    _, seconds = timed(lambda: helpers.build_blending_indices(
        idx, sample_idx, weights / weights.sum(), n, measured, False))  # fmt: skip
    rate = measured / seconds
    return f"{rate / 1e6:.2f} M samples/s: {samples / rate:,.0f} s for {samples:,} samples"


def measure(files: int, step: int, rng: np.random.Generator) -> list[str]:
    from annealmix.torch.megatron import MegatronDataset

    warm = Mixture(weights=dict.fromkeys("abcd", 1.0))  # the kernels loaded before measuring
    Plan(warm, global_batch_size=8, corpora={"x": ["a", "b"]}).point(10)
    with tempfile.TemporaryDirectory() as tmp:
        listed = write_list(Path(tmp), files, rng)
        release()  # the maps an earlier list left in the pool
        gc.collect()
        fds, rss = open_files(), anon_mb()
        (weights, sources, corpora), t_open = timed(
            lambda: read_file_list(listed, SEQ, output="dict"))  # fmt: skip
        fds_open, rss_open = open_files() - fds, anon_mb() - rss
        sizes = {n: len(s) for n, s in sources.items()}
        mix = Mixture(weights=weights)

        def plan(grouped: bool = True) -> Plan:
            return Plan(mix, global_batch_size=B, sizes=sizes,
                        corpora=corpora if grouped else None)  # fmt: skip

        def batch_at(at: int) -> list:  # a fresh plan and dataset, as a (re)start builds them
            data = MegatronDataset(sources, plan(), num_steps=step + 1)
            return data.__getitems__(range(at * B, at * B + B))  # as DataLoader asks

        _, t_first = timed(lambda: batch_at(0))
        _, t_lookup = timed(lambda: plan().point(step))
        _, t_resume = timed(lambda: batch_at(step))
        gc.collect()
        fds_end, rss_end = open_files() - fds, anon_mb() - rss
        _, t_per_file = timed(lambda: plan(grouped=False).point(step))
        mega = megatron_projection(np.array(list(weights.values())), step * B)
    return [
        f"| {files:,} | {t_open:.2f} s | {fds_open:,} / {fds_end:,} | {rss_open:.0f} / "
        f"{rss_end:.0f} MB | {t_first:.2f} s | {t_lookup:.2f} s | {t_resume:.2f} s | "
        f"{t_per_file:.2f} s | {mega} |"
    ]


def served(sources: dict, weights: dict, corpora: dict | None, steps: int = 100) -> tuple:
    """Tokens per second of planning alone (``Stream.take``: sources, draws, sample
    indices) and through ``MixtureDataLoader`` (one rank, no workers: planning and
    reading), each the best of 3 runs of ``steps`` steps after a warm-up of ``WARM``
    steps (a run's steady state: small sources' epoch permutations are cached as
    they come)."""
    from annealmix import Stream
    from annealmix.torch import MixtureDataLoader

    plan = Plan(Mixture(weights=weights), global_batch_size=SERVE_BATCH, corpora=corpora,
                sizes={n: len(s) for n, s in sources.items()})  # fmt: skip
    tokens = SERVE_BATCH * next(iter(sources.values())).seq_len
    stream = Stream(plan)
    loader = iter(MixtureDataLoader(sources, plan, num_steps=3 * steps + WARM))

    def rate(step) -> float:
        for _ in range(WARM):
            step()
        best = min(timed(lambda: [step() for _ in range(steps)])[1] for _ in range(3))
        return steps * tokens / best

    return rate(lambda: stream.take(1)), rate(lambda: next(loader))


def serving(files: int, seq: int, rng: np.random.Generator, pool: int | None = None) -> list[str]:
    """Planning and the loader over every file of a list against over two of its
    files, windows of ``seq`` tokens; ``pool``: at most that many maps (default: the
    run's)."""
    held = os.environ.get("ANNEALMIX_MAX_OPEN_FILES")
    if pool is not None:
        os.environ["ANNEALMIX_MAX_OPEN_FILES"] = str(pool)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            weights, sources, corpora = read_file_list(write_list(Path(tmp), files, rng), seq)
            two = list(weights)[:2]
            pair = served({n: sources[n] for n in two}, {n: weights[n] for n in two}, None)
            every = served(sources, weights, corpora)
            maps = max_open_files()
            release()
    finally:
        if held is None:
            os.environ.pop("ANNEALMIX_MAX_OPEN_FILES", None)
        else:
            os.environ["ANNEALMIX_MAX_OPEN_FILES"] = held
    whats = ("planning", f"the loader, at most {maps:,} maps")
    rows = [f"| {what} | {seq:,} | {files:,} files: {a / 1e6:.1f} M | {b / 1e6:.1f} M | "
            f"{b / a:.2f} |" for what, a, b in zip(whats, every, pair)]  # fmt: skip
    return rows if pool is None else rows[1:]  # planning maps no file: the same as before


def ranks(files: int, world: int, rng: np.random.Generator, steps: int = 20) -> list[str]:
    """Ranks of a ``world``-rank run, each alone in this process: planning time per
    step against one rank holding the whole batch, and the files each rank maps
    (against the files its own samples come from)."""
    from annealmix import Shard, Stream

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        weights, sources, corpora = read_file_list(write_list(Path(tmp), files, rng), SEQ)
        plan = Plan(Mixture(weights=weights), global_batch_size=B, corpora=corpora,
                    sizes={n: len(s) for n, s in sources.items()})  # fmt: skip
        names = plan.mixture.sources
        for rank, size in ((0, 1), (0, world), (world // 2, world), (world - 1, world)):
            stream = Stream(plan, Shard(global_batch_size=B, rank=rank, world_size=size))
            stream.take(WARM)
            _, seconds = timed(lambda s=stream: [s.take(1) for _ in range(steps)])
            release()
            gc.collect()
            before, wanted = open_files(), set()
            for _ in range(steps):
                batch = stream.take(1)
                for k in np.unique(batch.sources).tolist():
                    at = batch.sources == k
                    source = sources[names[k]]
                    source.read(batch.draws[at] // len(source), batch.indices[at])
                    wanted.add(k)
            mapped = open_files() - before
            out.append(f"| {rank} of {size} | {B // size} | {seconds / steps * 1e3:.2f} ms | "
                       f"{mapped:,} | {2 * len(wanted):,} |")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="1000,4000", help="file counts, comma-separated")
    parser.add_argument("--step", type=int, default=500_000, help="the resume step")
    parser.add_argument("--serve", default="4000", help="file counts to serve, comma-separated")
    parser.add_argument("--world", type=int, default=512, help="ranks to simulate (0: none)")
    parser.add_argument("--rank-files", type=int, default=4000)
    parser.add_argument("--max-open", type=int, default=None,
                        help="ANNEALMIX_MAX_OPEN_FILES (default: a quarter of ulimit -n)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.max_open is not None:
        os.environ["ANNEALMIX_MAX_OPEN_FILES"] = str(args.max_open)
    warnings.filterwarnings("ignore", "annealmix.*mapped again")  # a small pool on purpose
    rng = np.random.default_rng(0)
    lines = [
        f"# Thousands of files\n\n{describe()}\n",
        f"global batch {B}, windows of {SEQ} tokens, {CORPORA} corpora, held weights; a "
        f"resume at step {args.step:,}; at most {max_open_files()} files mapped at once; "
        "memory is anonymous memory (RssAnon: beyond the files' mapped pages)\n",
        "| files | open the list | file descriptors held (opened / after both batches) | "
        "memory (opened / after both batches) | plan + first batch | fresh lookup of the resume "
        "step | plan + batch at the resume step | baseline: the same lookup counting every file "
        "on its own (no corpora) | Megatron's C++ builder to that step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for files in (int(x) for x in args.files.split(",") if x):
        lines += measure(files, args.step, rng)
    serve = [int(x) for x in args.serve.split(",") if x]
    if serve:
        lines += [
            f"\nServing, one rank, steps of {SERVE_BATCH} windows, tokens per second (best of "
            "3): planning alone (`Stream.take`) and through `MixtureDataLoader` (no workers: "
            "planning and reading the files); a step reads a window or two of each of about "
            f"{SERVE_BATCH} files, two maps each (`.idx`, `.bin`)\n",
            "| what | tokens per window | every file of a list | two of its files | ratio |",
            "|---|---|---|---|---|",
        ]
        for files in serve:
            for seq in (SEQ, 2048):
                lines += serving(files, seq, rng)
                lines += serving(files, seq, rng, pool=2 * files + 64)  # every map kept
    if args.world:
        lines += [
            f"\n{args.world} ranks over {args.rank_files:,} files, each rank alone: planning "
            "per step (`Stream.take`), and the files a rank maps in 20 steps against the files "
            "(two a pair) its samples come from\n",
            "| rank | samples per step | planning per step | files mapped | files its "
            "samples come from |",
            "|---|---|---|---|---|",
        ]
        lines += ranks(args.rank_files, args.world, rng)
    report(lines, args.out)


if __name__ == "__main__":
    main()
