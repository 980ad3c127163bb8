"""torchtitan: an annealmix mixture as torchtitan's dataloader.

torchtitan (0.3.0 and later) builds its dataloader from the trainer config's
``dataloader`` field, ``config.dataloader.build(dp_world_size=, dp_rank=,
tokenizer=, seq_len=, local_batch_size=, ...)``. Put this one there::

    from annealmix.titan import AnnealmixDataLoader
    dataloader=AnnealmixDataLoader.Config(mix_config="mix.toml")

and the run reads the mixture config's sources (token files, packed documents),
phases and seed; ``with_mixture(config, "mix.toml")`` does that and sets the
training fields the mixture decides (global batch size, sequence length, steps).
What torchtitan's own loaders do not do, this one does:

- the mixture anneals inside the run (torchtitan's interleaved loader has fixed
  weights, drawn at random);
- its state is the same on every data-parallel rank and holds no rank in its
  keys, so DCP stores it once and a run resumes on another data-parallel degree
  (torchtitan's ``dp_rank_N`` keys refuse a changed degree);
- gradient accumulation is part of the plan: the config's ``global_batch_size``
  is the optimizer step's batch, and each of the
  ``global_batch_size / (local_batch_size x dp degree)`` micro-batches of a rank
  is a fixed slice of it.

Batches are torchtitan's ``({"input": tokens, "positions": positions}, labels)``:
positions restart at every document where the sources give the sample dict
(``output = "dict"``; torchtitan builds document masks from them), and targets
outside the loss mask are ``IGNORE_INDEX``.

Importing this module needs torchtitan; ``import annealmix`` never does. (It sits
beside ``annealmix.config``, not in ``annealmix.torch``: it reads a config file.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torchtitan.components.dataloader import BaseDataLoader
from torchtitan.components.loss import IGNORE_INDEX

from .config import load_config
from .shard import Shard
from .torch.loader import MixtureDataLoader

__all__ = ["AnnealmixDataLoader", "with_mixture"]


def with_mixture(trainer_config: Any, mix_config: str, *, num_workers: int = 0) -> Any:
    """torchtitan's trainer config with its data from an annealmix mixture config:
    the dataloader, and the training fields the mixture decides (``global_batch_size``,
    ``seq_len``, ``steps``), so that the two can never disagree. (A plan's step that
    were not the optimizer's step would anneal on the wrong clock.)"""
    mix = _one_batch_size(load_config(mix_config), mix_config)
    lengths = {s.seq_len for s in mix.sources}
    if len(lengths) != 1 or None in lengths:
        raise ValueError(
            f"{mix_config}: torchtitan needs one seq_len for every source, got "
            f"{ {s.name: s.seq_len for s in mix.sources} }; give each source the model's"
        )
    trainer_config.dataloader = AnnealmixDataLoader.Config(
        mix_config=str(mix_config), num_workers=num_workers
    )
    trainer_config.training.global_batch_size = mix.global_batch_size
    trainer_config.training.seq_len = lengths.pop()
    trainer_config.training.steps = mix.num_steps
    return trainer_config


def _one_batch_size(mix: Any, path: str) -> Any:
    """``mix``, refused where its batch size ramps: torchtitan's trainer steps with one."""
    if mix.ramp is not None:
        raise ValueError(
            f"{path}: torchtitan's trainer takes one global_batch_size, and this config ramps "
            "it (rampup_batch_size or batch_sizes); drop the ramp to train with torchtitan"
        )
    return mix


class AnnealmixDataLoader(BaseDataLoader):
    """torchtitan's dataloader protocol over an annealmix mixture config.

    Args:
        config: its ``Config`` (``mix_config``: the mixture's TOML file).
        dp_world_size: data-parallel degree (torchtitan's batch degree).
        dp_rank: this rank's data-parallel rank.
        seq_len: the model's sequence length; must be the sources' ``seq_len``.
        local_batch_size: samples per micro-batch on this rank.
        tokenizer, snapshot_every_n_steps: accepted as torchtitan passes them;
            the sources are already tokens, and the state is exact at every batch.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(BaseDataLoader.Config):
        mix_config: str = ""
        """An annealmix mixture config (TOML): sources, phases, seed, global batch size."""

        num_workers: int = 0
        """DataLoader worker processes."""

    def __init__(
        self,
        config: Config,
        *,
        dp_world_size: int,
        dp_rank: int,
        seq_len: int,
        local_batch_size: int,
        tokenizer: Any = None,
        snapshot_every_n_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not config.mix_config:
            raise ValueError(
                "AnnealmixDataLoader.Config needs mix_config: the path of an annealmix "
                'mixture config (TOML), e.g. mix_config="mix.toml"'
            )
        mix = _one_batch_size(load_config(config.mix_config), config.mix_config)
        b, per_pass = mix.global_batch_size, local_batch_size * dp_world_size
        if b % per_pass:
            raise ValueError(
                f"{config.mix_config}: global_batch_size = {b} is not a multiple of "
                f"local_batch_size {local_batch_size} x data-parallel degree {dp_world_size} "
                f"= {per_pass}; make it one (the quotient is the gradient accumulation steps)"
            )
        lengths = {s.name: s.seq_len for s in mix.sources}
        if any(n != seq_len for n in lengths.values()):
            raise ValueError(
                f"{config.mix_config}: the sources' seq_len {lengths} must be the model's "
                f"seq_len {seq_len}; give every source seq_len = {seq_len}"
            )
        shard = Shard(global_batch_size=b, world_size=dp_world_size, rank=dp_rank,
                      micro_batches=b // per_pass)  # fmt: skip
        self.dp_rank, self.dp_world_size = dp_rank, dp_world_size  # as torchtitan's loaders
        opened = mix.open()
        self.loader = MixtureDataLoader(
            dict(opened.sources), opened.plan, shard, num_steps=mix.num_steps,
            num_workers=config.num_workers,
        )  # fmt: skip

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        for batch in self.loader:
            yield _titan(batch["sample"])

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, Any]:
        """``{"annealmix": state}``: the same on every rank, no rank in its keys."""
        return {"annealmix": self.loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:  # torchtitan loads an empty state into a fresh run
            return
        if "annealmix" not in state_dict:
            raise ValueError(
                f"dataloader state has keys {sorted(state_dict)}, not 'annealmix': it was "
                "saved by another dataloader; resume with the one that saved it"
            )
        self.loader.load_state_dict(state_dict["annealmix"])

    def set_consumed_by_global_step(self, global_step: int, global_batch_size: int) -> None:
        """BlendCorpus's resume hook, called once the trainer has restored its step:
        go on from ``global_step`` (``global_batch_size`` samples a step, the plan's).
        The state (``load_state_dict``) says the same and more; this serves trainers
        that restore a step count only."""
        b = self.loader.plan.global_batch_size
        if global_batch_size != b:
            raise ValueError(
                f"global_batch_size {global_batch_size} is not the mixture's {b}: the steps "
                "would not line up; give the trainer the config's global_batch_size"
            )
        self.loader.seek_step(global_step)

    def metrics(self, step: int) -> dict[str, float]:
        """The mix at ``step`` for logging (``MixtureDataLoader.metrics``)."""
        return self.loader.metrics(step)


def _titan(sample: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """An annealmix batch -> torchtitan's ``({"input", "positions"}, labels)``."""
    if isinstance(sample, dict):
        labels = sample["labels"].clone()
        labels[sample["loss_mask"] == 0] = IGNORE_INDEX
        return {"input": sample["tokens"], "positions": sample["position_ids"]}, labels
    return {"input": sample[:, :-1]}, sample[:, 1:]
