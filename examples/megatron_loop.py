"""A Megatron-style training loop's data path, fed by annealmix.

    python examples/megatron_loop.py [--data data/megatron] [--steps 200]

1. Writes two Megatron pairs (``.bin``/``.idx``) with megatron-core's own
   ``IndexedDatasetBuilder``: byte tokens of the standard library's code and the
   reference manual's prose, one document per file or topic.
2. Reads two ``--data-path`` blends of them, the old mix and the new, into one
   annealing plan, and the global-index dataset Megatron's loop indexes.
3. Reads it the way Megatron-LM's ``MegatronPretrainingSampler`` hands out global
   sample indices (from ``consumed_samples``, each data-parallel rank its slice of
   every global batch; that sampler lives in Megatron-LM's training package, which
   is not on PyPI, so its index arithmetic is written out below), and restarts
   half-way from ``consumed_samples`` as Megatron's checkpoint resume does.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from annealmix import Mixture, Phase, Plan
from annealmix.blends import read_blend
from annealmix.demo.data import domain_bytes
from annealmix.torch.megatron import MegatronDataset

SEQ, GLOBAL, MICRO, DP = 128, 32, 4, 2  # global batch = micro x data-parallel x accumulation


def write_pairs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for domain, split_at in (("code", b"\n\n\n"), ("prose", b"\n\n")):
        builder = IndexedDatasetBuilder(str(folder / f"{domain}_text_document.bin"), np.uint16)
        for doc in domain_bytes(domain).tobytes().split(split_at):
            if doc.strip():
                builder.add_document(
                    torch.frombuffer(bytearray(doc), dtype=torch.uint8), [len(doc)]
                )
        builder.finalize(str(folder / f"{domain}_text_document.idx"))


def sampler(consumed_samples: int, total: int, dp_rank: int):
    """Megatron's pretraining sampler: global indices in order from consumed_samples,
    in global batches of MICRO x DP; rank r takes the r-th MICRO of each."""
    for start in range(consumed_samples, total - MICRO * DP + 1, MICRO * DP):
        yield list(range(start + dp_rank * MICRO, start + (dp_rank + 1) * MICRO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/megatron"))
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    write_pairs(args.data)
    old, sources = read_blend("0.9 code_text_document 0.1 prose_text_document", SEQ,
                              base=args.data, output="dict")  # fmt: skip
    new, _ = read_blend("0.2 code_text_document 0.8 prose_text_document", SEQ, base=args.data)
    s = args.steps
    mix = Mixture(weights=old, phases=[Phase(start_step=s // 4, end_step=3 * s // 4, weights=new)])
    plan = Plan(mix, global_batch_size=GLOBAL, sizes={n: len(x) for n, x in sources.items()})
    train_ds = MegatronDataset(sources, plan, num_steps=s)  # Megatron's train_samples = s x GLOBAL

    def run(consumed_samples: int) -> list[int]:
        """First token of every sample, all ranks, global-index order."""
        loaders = [iter(torch.utils.data.DataLoader(train_ds, batch_sampler=list(
            sampler(consumed_samples, len(train_ds), r)))) for r in range(DP)]  # fmt: skip
        out = []
        for batches in zip(*loaders):  # one micro-batch per rank at a time
            for batch in batches:
                out += batch["tokens"][:, 0].tolist()
        return out

    whole = run(0)
    half = len(train_ds) // 2
    resumed = run(half)  # a relaunch from a checkpoint at consumed_samples = half
    same = "identical" if resumed == whole[half:] else "DIFFERENT"
    print(f"{len(whole):,} samples read by {DP} data-parallel ranks; resumed from "
          f"consumed_samples = {half:,}: {same}")  # fmt: skip
    counts = plan.counts(0, s)
    for a in range(0, s, s // 8):
        share = counts[a : a + s // 8, 1].sum() / (GLOBAL * (s // 8))
        print(f"steps {a:4d}-{a + s // 8 - 1:4d}: prose {share:5.1%} of the tokens")


if __name__ == "__main__":
    main()
