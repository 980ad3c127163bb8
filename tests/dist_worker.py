"""Run under torchrun by test_dist.py: each rank writes what it loaded as JSON."""

import json
import sys

import numpy as np
import torch.distributed as dist

from annealmix import Mixture, Phase, Plan
from annealmix.metrics import rank_counts
from annealmix.torch import MixtureDataLoader, all_reduce_metrics

MIX = Mixture(
    weights={"a": 3.0, "b": 1.0, "c": 1.0},
    phases=[Phase(start_step=2, end_step=9, weights={"a": 1, "b": 1, "c": 3}, schedule="cosine")],
)
SOURCES = {"a": np.arange(200), "b": np.arange(60) + 1000, "c": np.arange(40) + 2000}
STEPS = 12


def plan() -> Plan:
    return Plan(MIX, global_batch_size=16, seed=9, sizes={k: len(v) for k, v in SOURCES.items()})


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = MixtureDataLoader(SOURCES, plan(), num_steps=STEPS, num_workers=1)  # rank from dist
    loaded, summed = [], []
    for batch in loader:
        loaded.append(batch["sample"].tolist())
        local = rank_counts(batch["source"].numpy(), MIX.sources)
        summed.append(all_reduce_metrics(local))
    with open(f"{out}.{rank}", "w") as f:
        json.dump(
            {
                "rank": rank,
                "world": dist.get_world_size(),
                "loaded": loaded,
                "summed": summed,
                "state": loader.state_dict(),
            },
            f,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
