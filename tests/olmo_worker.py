"""One rank of an OLMo-core training job on an annealmix mixture (``tests/test_olmo.py``).

    torchrun --nproc-per-node N tests/olmo_worker.py FOLDER STEPS [KILL_AT]

Trains OLMo-core's smallest transformer with its own ``Trainer``, gloo on CPU, from
``FOLDER/mix.toml``, checkpointing to ``FOLDER/ckpt`` every 4 steps (and resuming
from there when a checkpoint exists). Every rank appends one JSON line a step to
``FOLDER/audit-<world>-<rank>.jsonl``: the step, the source id and a hash of each of
its samples, the model's loss on the rank's batch before the update and the sum of
its weights (exact reprs). ``FOLDER/mix-metrics.jsonl`` gets the mix and held-out
metrics as logged (reduced over the ranks); each source's held-out loss is taken every
8 steps from ``FOLDER/<source>-val.npy``. With ``KILL_AT``, rank 0 sends SIGKILL to
the launcher and every worker (the launcher's process group and its own) when step
``KILL_AT`` begins, after writing its audit line.
"""

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from olmo_core.distributed.parallel import DataParallelType
from olmo_core.distributed.utils import get_rank, get_world_size
from olmo_core.nn.transformer import TransformerConfig
from olmo_core.optim import AdamWConfig
from olmo_core.train import (
    Duration,
    TrainerConfig,
    prepare_training_environment,
    teardown_training_environment,
)
from olmo_core.train.callbacks import Callback, CheckpointerCallback
from olmo_core.train.train_module import (
    TransformerDataParallelConfig,
    TransformerTrainModuleConfig,
)

from annealmix import TokenWindows
from annealmix.olmo import AnnealmixDataLoaderConfig, MixCallback, SourceValidation

SEQ = 16


class Audit(Callback):
    """Each step's samples and loss on this rank, and rank 0's mix metrics."""

    def __init__(self, folder: Path, kill_at: int | None) -> None:
        self.folder, self.kill_at = folder, kill_at

    def pre_step(self, batch):
        rows = batch["input_ids"]
        with torch.no_grad():
            logits = self.trainer.train_module.model(rows)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"])
        entry = {
            "step": self.step,
            "sources": self.trainer.data_loader.last_sources.tolist(),
            "samples": [hashlib.sha256(r.numpy().tobytes()).hexdigest()[:16] for r in rows],
            "loss": repr(float(loss)),
            "weights": repr(float(sum(p.double().sum() for p in
                                       self.trainer.train_module.model.parameters()))),
        }
        name = f"audit-{get_world_size()}-{get_rank()}.jsonl"
        with open(self.folder / name, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.step == self.kill_at and get_rank() == 0:
            os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)  # the launcher (torchrun)
            os.killpg(os.getpgid(0), signal.SIGKILL)  # and every worker

    def log_metrics(self, step, metrics):
        if get_rank() == 0:  # as reduced over the ranks
            mix = {k: v for k, v in metrics.items() if k.startswith(("mix/", "eval/"))}
            with open(self.folder / "mix-metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **mix}) + "\n")


def main() -> None:
    folder, steps = Path(sys.argv[1]), int(sys.argv[2])
    kill_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
    prepare_training_environment(seed=0, backend="gloo")
    held_out = {n: TokenWindows(np.load(folder / f"{n}-val.npy").astype(np.int64), SEQ)
                for n in ("web", "code")}  # fmt: skip
    model = TransformerConfig.olmo2_1M(vocab_size=64).build(init_device="cpu")
    train_module = TransformerTrainModuleConfig(  # DDP over gloo: one model on every rank
        rank_microbatch_size=2 * SEQ, max_sequence_length=SEQ, optim=AdamWConfig(lr=1e-2),
        dp_config=TransformerDataParallelConfig(name=DataParallelType.ddp),
    ).build(model)
    loader = AnnealmixDataLoaderConfig(mix_config=str(folder / "mix.toml"),
                                       work_dir=str(folder / "work")).build(
        dp_process_group=train_module.dp_process_group)  # fmt: skip
    trainer = TrainerConfig(
        save_folder=str(folder / "ckpt"), work_dir=str(folder / "work"),
        max_duration=Duration.steps(steps), metrics_collect_interval=1, async_bookkeeping=False,
        callbacks={"mix": MixCallback(loss_interval=1), "audit": Audit(folder, kill_at),
                   "validation": SourceValidation(held_out, interval=8, batch_size=3),
                   "checkpointer": CheckpointerCallback(save_interval=4, save_async=False)},
    ).build(train_module, loader)  # fmt: skip
    trainer.fit()
    if get_rank() == 0:  # the held-out means on one rank, all samples, for the test to compare
        model, means = train_module.model, {}
        with torch.no_grad():
            for name, source in held_out.items():
                x = torch.from_numpy(np.stack([source[i] for i in range(len(source))]))
                loss = torch.nn.functional.cross_entropy(
                    model(x[:, :-1]).float().transpose(1, 2), x[:, 1:], reduction="none")
                means[name] = float(loss.mean(dim=1).double().mean())
        (folder / "held-out.json").write_text(json.dumps(means))
    teardown_training_environment()


if __name__ == "__main__":
    main()
