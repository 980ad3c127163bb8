"""OLMo-core: an annealmix mixture as OLMo-core's data loader, and a callback that
logs the mix.

OLMo-core's ``Trainer`` takes a ``DataLoaderBase``; build this one from a mixture
config as its own loaders are built from theirs::

    from annealmix.olmo import AnnealmixDataLoaderConfig, MixCallback

    data_loader = AnnealmixDataLoaderConfig(mix_config="mix.toml").build(
        dp_process_group=train_module.dp_process_group)
    trainer = trainer_config.with_callback("mix", MixCallback()).build(train_module, data_loader)

``SourceValidation(held_out, interval=100)`` adds each source's held-out loss.

What OLMo-core counts and annealmix counts, mapped exactly:

- OLMo's global batch size is in tokens; the plan's in samples. Every sample is a
  window of ``seq_len + 1`` tokens, so the loader's ``global_batch_size`` is
  ``B x seq_len`` tokens, and each rank's batch holds ``input_ids`` (the first
  ``seq_len``) and ``labels`` (the last ``seq_len``): the window's own targets, where
  OLMo would otherwise shift ``input_ids`` and lose the last one. Sources must be
  windows of one ``seq_len`` (a config's ``seq_len``; packed documents are).
- One OLMo epoch is the plan's ``num_steps`` optimizer steps (``total_batches``);
  annealmix reshuffles each source's epochs itself, so ``reshuffle`` only checks
  that the trainer asks for epoch 1, and a second epoch is refused (raise
  ``num_steps`` instead). OLMo's train module splits each rank's batch into
  micro-batches itself: the loader hands out the rank's whole share of each step.
- The data-parallel rank and world come from the group OLMo gives (its mesh's data-
  parallel group: under tensor or context parallelism, peers of one data-parallel
  rank read the same batches), never from the world.
- The state is ``{"annealmix": the stream's state, "batches_processed": ...,
  "epoch": ...}``: the same on every rank, so a run resumes on another data-parallel
  degree; ``batches_processed`` must agree with the stream's step (a state from
  elsewhere is refused). The global batch size cannot be changed mid-run (OLMo's
  batch-size warm-up): the plan's batch is fixed.
- ``get_mock_batch`` is a batch of zeros of the real shape, for OLMo's dry run.

OLMo-core sets the spawn start method for DataLoader workers: a script using
``num_workers > 0`` needs an ``if __name__ == "__main__":`` guard (as any script
under spawn), or its workers hang while importing it again.

Importing this module needs OLMo-core (``ai2-olmo-core``); ``import annealmix``
never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from olmo_core.data.collator import DataCollator
from olmo_core.data.data_loader import DataLoaderConfig, TextDataLoaderBase
from olmo_core.distributed.utils import get_fs_local_rank, get_rank, get_world_size
from olmo_core.train.callbacks import Callback
from olmo_core.train.common import ReduceType

from . import _validate
from .config import load_config
from .plan import Plan
from .shard import Shard
from .sources import is_stream
from .torch.data import _ordered
from .torch.loader import MixtureDataLoader
from .torch.megatron import sample_length
from .torch.validation import validation_loader

__all__ = ["AnnealmixDataLoader", "AnnealmixDataLoaderConfig", "MixCallback", "SourceValidation"]


class AnnealmixDataLoader(TextDataLoaderBase):
    """OLMo-core's data loader over an annealmix plan (see the module doc).

    Args:
        sources: the plan's sources by name, each sample a window of ``seq_len + 1``
            tokens.
        plan: the plan; its global batch is ``plan.global_batch_size`` samples.
        num_steps: the run's optimizer steps (one OLMo epoch).
        work_dir: OLMo's working directory (a local path).
        dp_world_size, dp_rank: the data-parallel group's size and this rank in it.
        num_workers: DataLoader workers of this rank.
    """

    def __init__(self, sources: Mapping[str, Any], plan: Plan, *, num_steps: int, work_dir: str,
                 dp_world_size: int = 1, dp_rank: int = 0, fs_local_rank: int | None = None,
                 num_workers: int = 0) -> None:  # fmt: skip
        b = plan.global_batch_size
        if plan.batch_sizes is not None:
            raise ValueError(
                "the plan's batch size ramps (rampup_batch_size or batch_sizes): OLMo-core's "
                "loader takes one global batch a step; drop the ramp"
            )
        if b % dp_world_size:
            raise ValueError(
                f"the plan's global batch of {b} samples does not split over {dp_world_size} "
                "data-parallel ranks; make global_batch_size a multiple of the data-parallel size"
            )
        lengths = {sample_length(s) for s in _ordered(sources, plan) if not is_stream(s)}
        if len(lengths) != 1 or min(lengths) < 2:
            raise ValueError(
                f"OLMo-core counts its batch in tokens: the random-access sources must be "
                f"windows of one seq_len + 1 tokens, got {sorted(lengths)} tokens; cut every "
                "source into windows of the model's seq_len"
            )
        self.seq_len = lengths.pop() - 1
        super().__init__(collator=DataCollator(pad_token_id=0), work_dir=work_dir,
                         global_batch_size=b * self.seq_len, dp_world_size=dp_world_size,
                         dp_rank=dp_rank, fs_local_rank=fs_local_rank)  # fmt: skip
        self.plan = plan
        self.num_steps = _validate.integer("num_steps", num_steps, minimum=1)
        shard = Shard(global_batch_size=b, rank=dp_rank, world_size=dp_world_size)
        self.loader = MixtureDataLoader(dict(sources), plan, shard, num_steps=self.num_steps,
                                        num_workers=num_workers)  # fmt: skip
        self.last_sources: torch.Tensor | None = None  # each sample's source id, last batch

    @TextDataLoaderBase.global_batch_size.setter
    def global_batch_size(self, tokens: int) -> None:
        if tokens != self._global_batch_size:
            raise ValueError(
                f"the plan's global batch is fixed at {self._global_batch_size} tokens, not "
                f"{tokens}: a batch-size warm-up would change the run's steps; drop it, or "
                "build the plan for the batch you train with"
            )
        self._global_batch_size = tokens

    @property
    def total_batches(self) -> int:
        return self.num_steps

    def reshuffle(self, epoch: int | None = None, **kwargs: Any) -> None:
        epoch = 1 if epoch is None else epoch
        if epoch != 1:
            raise ValueError(
                f"the plan covers {self.num_steps} steps as one epoch; epoch {epoch} would read "
                "past it: raise num_steps in the mixture config rather than training for more "
                "epochs"
            )
        if self.loader.step != self.batches_processed:
            raise ValueError(
                f"the loader stands at step {self.loader.step}, the trainer at batch "
                f"{self.batches_processed}: load the state the run saved, or none"
            )
        self._epoch = epoch

    def _iter_batches(self) -> Iterable[dict[str, Any]]:
        for batch in self.loader:
            x = batch["sample"]
            if isinstance(x, dict) or x.shape[1] != self.seq_len + 1:
                raise ValueError(
                    f"OLMo-core reads windows of seq_len + 1 = {self.seq_len + 1} tokens: give "
                    'the config output = "tokens" and every source that seq_len'
                )
            self.last_sources = batch["source"]
            yield {"input_ids": x[:, :-1], "labels": x[:, 1:]}

    def state_dict(self) -> dict[str, Any]:
        """The stream's state (the same on every rank) and OLMo's epoch bookkeeping."""
        return {"annealmix": self.loader.state_dict(), "batches_processed": self.batches_processed,
                "epoch": self._epoch}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = {"annealmix", "batches_processed"} - set(state_dict)
        if missing:
            raise ValueError(
                f"data loader state lacks {sorted(missing)}: it was saved by another data "
                "loader; resume with the one that saved it"
            )
        self.loader.load_state_dict(state_dict["annealmix"])
        self.batches_processed = int(state_dict["batches_processed"])
        self._epoch = state_dict.get("epoch")
        if self.loader.step != self.batches_processed:
            raise ValueError(
                f"data loader state is at batch {self.batches_processed} of the epoch but its "
                f"stream at step {self.loader.step}: it was edited; resume from the state the "
                "run saved"
            )

    def get_mock_batch(self) -> dict[str, Any]:
        rows = self.rank_batch_size // self.seq_len
        zeros = torch.zeros((rows, self.seq_len), dtype=torch.long)
        return {"input_ids": zeros, "labels": zeros.clone()}

    def weights_at(self, step: int) -> np.ndarray:
        """The mix the plan follows at ``step`` (0-based)."""
        return self.loader.weights_at(step)


@DataLoaderConfig.register("annealmix")
@dataclass
class AnnealmixDataLoaderConfig(DataLoaderConfig[AnnealmixDataLoader]):
    """OLMo-core's data loader config for an annealmix mixture config (TOML).

    Args:
        mix_config: the mixture config's path: sources, phases, batch, steps.
        work_dir: OLMo's working directory (default: the trainer's, else ``.``).
        num_workers: DataLoader workers per rank.
    """

    mix_config: str
    work_dir: str | None = None
    num_workers: int = 0

    def build(self, *, mesh: Any = None, dp_process_group: Any = None) -> AnnealmixDataLoader:
        """The loader of this rank: its data-parallel group from ``dp_process_group``
        (the train module's), or from ``mesh``'s data-parallel dimensions."""
        if dp_process_group is None and mesh is not None:
            from olmo_core.distributed.parallel import get_dp_process_group

            dp_process_group = get_dp_process_group(mesh)
        mix = load_config(self.mix_config)
        opened = mix.open()
        return AnnealmixDataLoader(
            dict(opened.sources), opened.plan, num_steps=mix.num_steps,
            work_dir=self.work_dir or ".", dp_world_size=get_world_size(dp_process_group),
            dp_rank=get_rank(dp_process_group), fs_local_rank=get_fs_local_rank(),
            num_workers=self.num_workers,
        )  # fmt: skip


@dataclass
class MixCallback(Callback):
    """Logs the mix every step: the scheduled weight and the step's share of each
    source (``mix/weight/<source>``, ``mix/share/<source>``, from the plan: the same
    on every rank) and, every ``loss_interval`` steps, each source's mean loss over
    the step's global batch (``mix/loss/<source>``: each rank adds its samples'
    losses over the source's count in the step, summed across ranks; one forward pass
    without grad before the update, about a third of a step where it runs; 0: never).
    Every rank records the same names, as OLMo's metric reduction needs. Needs the
    trainer's data loader to be an ``AnnealmixDataLoader``."""

    loss_interval: int = 10

    def pre_step(self, batch: dict[str, Any]) -> None:
        loader = self.trainer.data_loader
        if not isinstance(loader, AnnealmixDataLoader):
            raise TypeError(
                f"MixCallback reads the mix from an AnnealmixDataLoader, not a "
                f"{type(loader).__name__}: build the data loader with AnnealmixDataLoaderConfig"
            )
        plan, step = loader.plan, self.step - 1  # OLMo counts steps from 1
        names, counts = plan.mixture.sources, plan.counts(step)[0]
        for name, w, c in zip(names, loader.weights_at(step), counts.tolist()):
            self.trainer.record_metric(f"mix/weight/{name}", float(w))
            self.trainer.record_metric(f"mix/share/{name}", c / plan.global_batch_size)
        if not self.loss_interval or step % self.loss_interval:
            return
        with torch.no_grad():
            logits = self.trainer.train_module.model(batch["input_ids"])
            loss = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), batch["labels"], reduction="none").mean(dim=1)
        ids = loader.last_sources.to(loss.device, torch.long)
        sums = torch.zeros(len(names), dtype=torch.float64).index_add(0, ids, loss.double())
        for k, name in enumerate(names):
            if counts[k]:  # this rank's share of the source's mean in the step
                self.trainer.record_metric(f"mix/loss/{name}", sums[k] / int(counts[k]),
                                           reduce_type=ReduceType.sum)  # fmt: skip


class SourceValidation(Callback):
    """Each source's held-out loss every ``interval`` steps (``eval/loss/<source>``):
    the exact mean over its held-out samples (a packed window comes from one source,
    so the id survives packing). The ranks split the batches
    (``annealmix.torch.validation.validation_loader``), each adds its samples'
    losses over the source's count, and OLMo sums them across ranks.

    Args:
        sources: held-out sources by name (some or all of the plan's), each sample a
            window of ``seq_len + 1`` tokens.
        interval: steps between evaluations.
        batch_size: held-out samples per forward pass on a rank.
        per_source: at most this many samples of each source (default: all).
    """

    def __init__(self, sources: Mapping[str, Any], *, interval: int = 100, batch_size: int = 8,
                 per_source: int | None = None) -> None:  # fmt: skip
        self.sources = dict(sources)
        self.interval = _validate.integer("interval", interval, minimum=1)
        self.batch_size = _validate.integer("batch_size", batch_size, minimum=1)
        self.per_source = per_source

    def post_step(self) -> None:
        if self.step % self.interval:
            return
        loader = self.trainer.data_loader
        if not isinstance(loader, AnnealmixDataLoader):
            raise TypeError(
                f"SourceValidation names sources by the plan of an AnnealmixDataLoader, not a "
                f"{type(loader).__name__}: build the data loader with AnnealmixDataLoaderConfig"
            )
        names = loader.plan.mixture.sources
        batches = validation_loader(self.sources, loader.plan, batch_size=self.batch_size,
                                    per_source=self.per_source,
                                    shard=(loader.dp_rank, loader.dp_world_size))  # fmt: skip
        model = self.trainer.train_module.model
        training, sums = model.training, torch.zeros(len(names), dtype=torch.float64)
        model.eval()
        with torch.no_grad():
            for batch in batches:
                x = batch["sample"]
                logits = model(x[:, :-1])
                loss = torch.nn.functional.cross_entropy(
                    logits.float().transpose(1, 2), x[:, 1:], reduction="none").mean(dim=1)
                sums.index_add_(0, batch["source"], loss.double().cpu())
        model.train(training)
        for k, name in enumerate(names):
            size = len(self.sources.get(name, ()))
            count = size if self.per_source is None else min(size, self.per_source)
            if count:  # every rank records the same names
                self.trainer.record_metric(f"eval/loss/{name}", sums[k] / count,
                                           reduce_type=ReduceType.sum)  # fmt: skip
