"""The ALCF cooldown in one run: a pretraining data-file-list, then an anneal to a
second list over the learning rate's decay, without a relaunch.

    python examples/alcf_cooldown.py [--data data/alcf] [--steps 1000] [--out alcf-out]

ALCF's Megatron-DeepSpeed trains on a data-file-list (``weight prefix corpus`` per
line) and changes the mix by stopping the run and relaunching it on another list
for the cooldown. Here both lists are read as one set of sources
(``annealmix.blends.read_file_lists``: a file in one list only has weight 0 in the
other), and the mix moves from the first list's weights to the second's
over the last 10% of the run, while a warmup-stable-decay learning rate decays:

1. writes Megatron pairs for six corpora with megatron-core's own
   ``IndexedDatasetBuilder`` (generated tokens; three to eight files a corpus) and
   two lists of them, each corpus's share spread over its files in proportion to
   their (log-normal) sizes: the pretraining mix and a cooldown mix that brings in
   a ``math`` corpus and drops ``web``'s share;
2. builds the plan over the lists' corpora (``corpora=``: a corpus is counted
   exactly and its files split in closed form) and Megatron's global-index dataset
   (``MegatronDataset``), and reads the first step through it, as Megatron's loop
   would;
3. prints the scheduled and realized corpus shares at steps through the run, and
   writes ``corpus_shares.png``: the scheduled share of every corpus (lines) and
   each step's realized share (dots), with the learning rate beside it.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from annealmix import Mixture, Phase, Plan
from annealmix.blends import read_file_lists
from annealmix.torch.megatron import MegatronDataset

SEQ, GLOBAL = 64, 64
CORPORA = {"web": 8, "books": 4, "code": 5, "wiki": 3, "papers": 4, "math": 3}
PRETRAIN = {"web": 0.55, "books": 0.15, "code": 0.15, "wiki": 0.1, "papers": 0.05}
COOLDOWN = {"web": 0.15, "books": 0.1, "code": 0.25, "wiki": 0.15, "papers": 0.15, "math": 0.2}


def write_corpora(folder: Path, rng: np.random.Generator) -> dict[str, list[Path]]:
    """Megatron pairs per corpus: documents of 20 to 400 generated tokens."""
    files = {}
    for corpus, count in CORPORA.items():
        (folder / corpus).mkdir(parents=True, exist_ok=True)
        files[corpus] = []
        for i in range(count):
            prefix = folder / corpus / f"{corpus}-{i:04d}_text_document"
            builder = IndexedDatasetBuilder(f"{prefix}.bin", np.uint16)
            for length in rng.integers(20, 400, int(rng.integers(30, 120))):
                builder.add_document(torch.from_numpy(rng.integers(1, 50_000, length)), [length])
            builder.finalize(f"{prefix}.idx")
            files[corpus].append(prefix)
    return files


def write_list(path: Path, shares: dict, files: dict, size: dict) -> Path:
    """A data-file-list: each corpus's share spread over its files by their sizes (as
    ALCF's lists weigh files by their tokens), so a corpus's files keep their ratios
    from one list to the other."""
    lines = ["# weight prefix corpus"]
    for corpus, share in shares.items():
        w = np.array([size[p] for p in files[corpus]])
        lines += [f"{share * x / w.sum():.9f} {p} {corpus}" for x, p in zip(w, files[corpus])]
    path.write_text("\n".join(lines) + "\n")
    return path


def learning_rate(step: int, steps: int, peak: float = 3e-4) -> float:
    """Warmup-stable-decay: 5% warm-up, stable to 90%, a linear decay to 0."""
    warm, decay = steps // 20, int(steps * 0.9)
    if step < warm:
        return peak * (step + 1) / warm
    return peak if step < decay else peak * (steps - step) / (steps - decay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/alcf"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("alcf-out"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    files = write_corpora(args.data.resolve(), rng)
    size = {p: float(rng.lognormal(0.0, 0.5)) for ps in files.values() for p in ps}
    first = write_list(args.data / "pretrain.txt", PRETRAIN, files, size)
    second = write_list(args.data / "cooldown.txt", COOLDOWN, files, size)

    # one run over both lists' files: each list's weights cover every file (0 where absent)
    (start, target), sources, corpora = read_file_lists([first, second], SEQ, output="dict")
    steps = args.steps
    cooldown = Phase(start_step=int(steps * 0.9), end_step=steps - 1, weights=target)
    # corpora=: each corpus counted exactly, its files split in closed form, so a resume
    # of a list of thousands of files costs what one of its corpora does
    plan = Plan(Mixture(weights=start, phases=[cooldown]), global_batch_size=GLOBAL,
                sizes={n: len(s) for n, s in sources.items()}, corpora=corpora)  # fmt: skip
    dataset = MegatronDataset(sources, plan, num_steps=steps)
    first_step = [dataset[i] for i in range(GLOBAL)]  # what Megatron's loop reads first
    print(f"{len(sources)} files in {len(corpora)} corpora from two lists; one run of "
          f"{steps} steps of {GLOBAL} windows; step 0 read: {len(first_step)} samples of "
          f"{first_step[0]['tokens'].numel()} tokens")  # fmt: skip

    names = plan.mixture.sources
    member = np.array([next(c for c, ns in corpora.items() if n in ns) for n in names])
    order = list(corpora)
    scheduled = plan.mixture.weights_at(np.arange(steps))
    counts = plan.counts(0, steps)  # samples of each file in each step
    shares = {c: (scheduled[:, member == c].sum(1), counts[:, member == c].sum(1) / GLOBAL)
              for c in order}  # fmt: skip
    print("step  lr        " + "  ".join(f"{c:>14}" for c in order))
    for step in (0, steps // 2, int(steps * 0.9), int(steps * 0.95), steps - 1):
        cells = "  ".join(f"{shares[c][0][step]:.3f}/{shares[c][1][step]:.3f}".rjust(14)
                          for c in order)  # fmt: skip
        print(f"{step:<5} {learning_rate(step, steps):.2e}  {cells}")
    print("(scheduled/realized corpus share of the step)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, lr) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=[3, 1])
    for c in order:
        line = ax.plot(shares[c][0], label=c)[0]
        ax.plot(np.arange(steps), shares[c][1], ".", ms=2, color=line.get_color(), alpha=0.4)
    ax.set_ylabel("corpus share of the step")
    ax.set_title("one run over both lists: scheduled share (line), realized per step (dots)")
    ax.legend(ncol=3, fontsize=8)
    lr.plot([learning_rate(t, steps) for t in range(steps)], color="k")
    lr.set_ylabel("learning rate")
    lr.set_xlabel("step (the cooldown: the last 10%, where the learning rate decays)")
    args.out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out / "corpus_shares.png", dpi=120)
    print(f"wrote {args.out / 'corpus_shares.png'}")


if __name__ == "__main__":
    main()
