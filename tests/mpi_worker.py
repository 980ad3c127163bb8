"""Run under mpirun by test_dist.py: no torch.distributed, the rank from Open MPI's
environment; each rank writes what it loaded, then resumes a saved state, as JSON."""

import json
import sys

from dist_worker import MIX, SOURCES, STEPS, plan

from annealmix.torch import MixtureDataLoader, resolve_local_rank, resolve_shard


def main(out: str) -> None:
    shard = resolve_shard(plan().global_batch_size)  # OMPI_COMM_WORLD_* here
    loader = MixtureDataLoader(SOURCES, plan(), shard, num_steps=STEPS)
    loaded, state = [], None
    for i, batch in enumerate(loader):
        loaded.append(batch["sample"].tolist())
        if i == 4:
            state = loader.state_dict()
    resumed = MixtureDataLoader(SOURCES, plan(), shard, num_steps=STEPS)
    resumed.load_state_dict(state)
    tail = [batch["sample"].tolist() for batch in resumed]
    with open(f"{out}.{shard.rank}", "w") as f:
        json.dump(
            {
                "rank": shard.rank,
                "world": shard.world_size,
                "local_rank": resolve_local_rank(),
                "sources": list(MIX.sources),
                "loaded": loaded,
                "tail": tail,
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1])
