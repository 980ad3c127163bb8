"""Run under torchrun by test_dist.py: save the loader's state with
torch.distributed.checkpoint, or load it (on any world size) and carry on.

    dcp_worker.py save DIR OUT      # 5 steps, then dcp.save
    dcp_worker.py load DIR OUT      # dcp.load, the rest of the run
    dcp_worker.py grow DIR OUT      # dcp.load into a plan with a fourth source, re-planned
"""

import json
import sys

import numpy as np
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from dist_worker import MIX, SOURCES, STEPS, plan

from annealmix import Mixture, Plan
from annealmix.torch import MixtureDataLoader

SAVED_AT = 5


def grown() -> tuple[Plan, dict]:
    sources = dict(SOURCES, d=np.arange(30) + 3000)
    mixture = Mixture(weights={"a": 1, "b": 1, "c": 1, "d": 3})
    return Plan(
        mixture, global_batch_size=16, seed=9, sizes={k: len(v) for k, v in sources.items()}
    ), sources


def main(mode: str, path: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    p, sources = (plan(), SOURCES) if mode != "grow" else grown()
    loader = MixtureDataLoader(sources, p, num_steps=STEPS)  # rank from torch.distributed
    loaded = []
    if mode == "save":
        for i, batch in enumerate(loader):
            loaded.append(batch["sample"].tolist())
            if i + 1 == SAVED_AT:
                break
        dcp.save({"data": loader.state_dict()}, checkpoint_id=path)
    else:
        state = {"data": loader.state_dict()}  # the template: same keys whatever the plan
        dcp.load(state, checkpoint_id=path)
        if mode == "grow":
            loader.load_state_dict(state["data"], replan=True, previous_sources=MIX.sources)
        else:
            loader.load_state_dict(state["data"])
        loaded = [batch["sample"].tolist() for batch in loader]
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"rank": rank, "world": dist.get_world_size(), "loaded": loaded,
                   "state": loader.state_dict(),
                   "consumed": loader.consumed.tolist()}, f)  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
