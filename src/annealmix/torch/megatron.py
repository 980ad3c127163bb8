"""Megatron-LM's data path: the global stream indexed by global sample number.

Megatron's pretraining samplers hand each data-parallel rank the global sample
indices of its micro-batches (``consumed_samples`` onward) and its training step
reads a dict per sample (``tokens``, ``labels``, ``loss_mask``, ``position_ids``).
``MegatronDataset`` is that map-style dataset over the plan: sample ``i`` is
position ``i % B`` of (plan) step ``i // B`` of the global stream, so Megatron's samplers,
their ``consumed_samples`` resume and its data-parallel split work unchanged, and
annealmix decides only what each position holds. Within a step the positions are
turned as ``annealmix.Shard`` turns its windows (``turn(step)``), so that the
contiguous slices Megatron gives each rank meet every part of the mix over time;
the step's set of samples is the plan's either way.

Under a batch-size ramp (Megatron's ``--rampup-batch-size``, ``annealmix.ramp``)
the plan counts in plan steps of the ramp's unit, and sample ``i`` is position
``i % unit`` of plan step ``i // unit``: Megatron's samplers read on in order while
its calculator takes more micro-batches per step, and each step's samples are
those the plan gives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import _validate
from ..packing import Packed
from ..plan import Batch, Plan
from ..reading import read_grouped
from ..sample_dict import MEGATRON_FLAGS, megatron_fields
from ..shard import turn
from ..sources import batch_row, is_stream, read_one
from ..stream import Position, Stream
from .data import _ordered

__all__ = ["MegatronDataset"]

_CHUNK_STEPS = 64  # steps planned at once: Megatron reads the stream nearly in order


class MegatronDataset(Dataset):
    """The global stream as Megatron's GPT training loop reads it.

    Args:
        sources: random-access token sources by name, each sample ``seq_len + 1``
            tokens (``annealmix.TokenWindows``, ``open_token_source(...)``), or
            Megatron's sample dict itself (``annealmix.packing.Packed`` with
            ``output="dict"``: position ids and loss mask per document).
        plan: the plan, its sizes those of the sources.
        num_steps: optimizer steps of the run (the dataset has ``num_steps * B``
            samples, Megatron's ``train_samples``; under a batch-size ramp
            (``Plan(global_batch_size=BatchSizes.megatron(...))``) the samples of
            those steps, ``plan.batch_sizes.samples_before(num_steps)``).
        eod_token: the end-of-document id, which Megatron's switches find documents
            by in windows of tokens.
        item: ``"dict"``: Megatron-LM's sample dict; ``"text"``: ``{"text": the
            seq_len + 1 tokens}``, what argonne-lcf's Megatron-DeepSpeed reads
            (its ``get_batch`` cuts tokens and labels and builds the masks itself,
            from its own flags: none may be given here).
        reset_position_ids, reset_attention_mask, eod_mask_loss: Megatron's switches
            (``--reset-position-ids``, ...), computed from ``eod_token`` as Megatron
            computes them for windows of tokens; a ``Packed`` source's dict carries
            its own (from its document boundaries), and a switch given here that
            differs from one of those is refused. ``None``: as the sources say (off
            for windows, as Megatron's defaults).
        source_ids: add ``"source"``, the sample's source id (a 0-d int64 tensor), to
            each item: a packed window comes from one source, so per-domain losses
            (Megatron-Bridge's and NeMo's per-dataset validation) can be taken after
            packing. Megatron-LM's ``get_batch`` reads its own keys and leaves it.
    """

    def __init__(
        self, sources: Mapping[str, Any], plan: Plan, *, num_steps: int,
        eod_token: int | None = None, reset_position_ids: bool | None = None,
        reset_attention_mask: bool | None = None, eod_mask_loss: bool | None = None,
        item: str = "dict", source_ids: bool = False,
    ) -> None:  # fmt: skip
        self.sources = _ordered(sources, plan)
        streams = [n for n, s in zip(plan.mixture.sources, self.sources) if is_stream(s)]
        if streams:
            raise TypeError(
                f"MegatronDataset reads samples by global index: sources {streams} are streams; "
                "give random-access sources (token files, Packed, a map-style dataset)"
            )
        self.plan = plan
        self.num_steps = _validate.integer("num_steps", num_steps, minimum=1)
        self._plan_steps = plan.plan_steps(self.num_steps)
        lengths = {sample_length(s) for s in self.sources}
        if len(lengths) != 1:
            raise ValueError(
                f"sources give samples of {sorted(lengths)} tokens; Megatron's batches need "
                "one length: cut every source into windows of the same seq_len"
            )
        self.seq_len = lengths.pop() - 1
        if self.seq_len < 1:
            raise ValueError("samples must hold at least 2 tokens (seq_len + 1)")
        given = dict(zip(MEGATRON_FLAGS, (reset_position_ids, reset_attention_mask,
                                          eod_mask_loss)))  # fmt: skip
        for name, source in zip(plan.mixture.sources, self.sources):
            if not isinstance(source, Packed):
                continue
            own = {f: getattr(source, f) for f in MEGATRON_FLAGS}
            clash = {f: v for f, v in given.items() if v is not None and v != own[f]}
            if clash:
                wanted = ", ".join(f"{f}={v}" for f, v in clash.items())
                raise ValueError(
                    f"{name} is a Packed source built with {own}, not {clash}: its dict "
                    f"carries its own switches; build it with Packed(..., {wanted}) (or "
                    "read_blend(..., the same))"
                )
        self.item = _validate.choice("item", item, ("dict", "text"))
        self.source_ids = bool(source_ids)
        if item == "text" and any(v is not None for v in given.values()):
            raise ValueError(
                'item = "text" hands Megatron-DeepSpeed the tokens, and its get_batch builds '
                "the masks from its own flags (--eod-mask-loss, ...): give them there"
            )
        self.flags = {f: bool(v) for f, v in given.items()}
        windows = not all(isinstance(source, Packed) for source in self.sources)
        if windows and any(self.flags.values()) and eod_token is None:
            on = [f for f, v in self.flags.items() if v]
            raise ValueError(f"{on} find documents by their end: give eod_token (the EOD id)")
        self.eod_token = None if eod_token is None else _validate.integer(
            "eod_token", eod_token, minimum=0)  # fmt: skip
        self._stream = Stream(plan)
        self._chunk: Batch | None = None
        self._next: Position | None = None  # where the planned chunk ends

    def __len__(self) -> int:
        return self._plan_steps * self.plan.global_batch_size

    def step_of(self, index: int) -> int:
        """The optimizer step global sample ``index`` is read in (under a ramp, its
        batch size decides: ``BatchSizes.step_of_sample``)."""
        ramp = self.plan.batch_sizes
        if ramp is None:
            return int(index) // self.plan.global_batch_size
        return ramp.step_of_sample(index)

    def locate(self, index: int) -> tuple[int, int, int]:
        """(source id, sample index within it, epoch) of global sample ``index``."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"global sample {index} is out of range for {len(self)} samples")
        b = self.plan.global_batch_size
        step, j = divmod(index, b)
        chunk = self._planned(step)
        row, col = step - chunk.start_step, (j + int(turn(step, b))) % b
        source = int(chunk.sources[row, col])
        epoch = int(chunk.draws[row, col]) // self.plan.sizes[source]
        return source, int(chunk.indices[row, col]), epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        source, sample, epoch = self.locate(index)
        return self._item(read_one(self.sources[source], epoch, sample), source)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Samples ``indices`` (a micro-batch, which ``DataLoader`` hands over at once
        under Megatron's batch samplers), each source's read in one call and packed
        sources together (``annealmix.reading.read_grouped``)."""
        rows = np.array([self.locate(i) for i in indices], dtype=np.int64).reshape(-1, 3)
        out: list[Any] = [None] * len(rows)
        for _, at, got in read_grouped(self.sources, rows[:, 0], rows[:, 2], rows[:, 1]):
            for j, row in enumerate(at.tolist()):
                out[row] = self._item(batch_row(got, j), int(rows[row, 0]))
        return out

    def _item(self, got: Any, source: int) -> dict[str, torch.Tensor]:
        """A sample of ``source`` as Megatron reads it (``item``, ``source_ids``)."""
        tag = {"source": torch.tensor(source, dtype=torch.int64)} if self.source_ids else {}
        if self.item == "text":
            if isinstance(got, dict):  # a window's tokens: the inputs and the last target
                got = np.append(np.asarray(got["tokens"]), np.asarray(got["labels"])[-1:])
            return {"text": torch.from_numpy(np.asarray(got, dtype=np.int64)), **tag}
        if isinstance(got, dict):
            return {**{k: torch.from_numpy(np.require(v, requirements="W"))
                       for k, v in got.items()}, **tag}  # fmt: skip
        tokens = np.asarray(got, dtype=np.int64)
        fields = megatron_fields(tokens[:-1], self.eod_token, **self.flags)
        return {"tokens": torch.from_numpy(tokens[:-1]), "labels": torch.from_numpy(tokens[1:]),
                **{k: torch.from_numpy(v) for k, v in fields.items()}, **tag}  # fmt: skip

    def _planned(self, step: int) -> Batch:
        chunk = self._chunk
        if chunk is not None and chunk.start_step <= step < chunk.start_step + len(chunk.sources):
            return chunk
        stream = self._stream
        if self._next is not None and step == self._next.step:  # reading on: counts known
            stream.seek(self._next)
        else:
            stream.seek_step(step)
        self._chunk = stream.take(min(_CHUNK_STEPS, self._plan_steps - step))
        self._next = stream.position
        return self._chunk

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_chunk": None, "_next": None}  # workers plan their own


def sample_length(source: Any) -> int:
    """Tokens of a source's samples: ``seq_len + 1`` (a window, or a sample dict's
    inputs + 1), from its own count where it has one (no file is read)."""
    known = source.sample_tokens()
    if isinstance(known, int):
        return known + 1
    sample = read_one(source, 0, 0)
    if isinstance(sample, dict):
        return len(sample["tokens"]) + 1
    return len(np.asarray(sample))
