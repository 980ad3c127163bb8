"""``MixtureDataLoader``: a DataLoader over named sources that follows the plan (see
the package doc)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import _validate
from .. import metrics as _metrics
from ..plan import Plan
from ..shard import Shard
from ..sources import is_stream
from ..stream import Position
from .data import (
    MixedDataset,
    MixtureBatchSampler,
    MixtureIterableDataset,
    _ordered,
    _TaggedCollate,
    collated,
)

__all__ = ["MixtureDataLoader"]


class MixtureDataLoader(DataLoader):
    """A DataLoader over named sources that follows the plan, with exact resume.

    Picks the map-style path when every source is random-access, the iterable path
    when any is a stream. Every batch travels with the stream position after it, so
    ``state_dict()`` is the state after the last batch handed to the loop, however
    far the workers prefetched, with no replay; it fits ``torch.distributed.checkpoint``'s
    Stateful protocol, and loading it on another world size continues the same
    global stream. A new iteration (``for batch in loader`` again) continues where
    the loop stopped.

    Args:
        sources: the sources by name (each random-access or a stream).
        plan: the plan, its sizes those of the random-access sources.
        shard: this rank's part of each batch (rank, world size, micro-batches);
            by default found once from ``torch.distributed`` or the launcher's
            environment, one micro-batch per step (``resolve_shard``).
        num_steps: the run's steps (``None``: endless).
        transform: applied to every sample as ``transform(sample, source_id)``.
        **kwargs: passed to ``torch.utils.data.DataLoader`` (``num_workers``,
            ``collate_fn``, ``pin_memory``, ...), not the batching arguments.
    """

    def __init__(
        self,
        sources: Mapping[str, Any],
        plan: Plan,
        shard: Shard | None = None,
        *,
        num_steps: int | None = None,
        transform: Callable[[Any, int], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for arg in ("batch_size", "batch_sampler", "sampler", "shuffle", "drop_last"):
            if arg in kwargs:
                raise TypeError(f"MixtureDataLoader sets {arg} from the plan; remove {arg}=")
        ordered = _ordered(sources, plan)
        sampler = MixtureBatchSampler(plan, shard, num_steps=num_steps)
        sampler._tagged = True
        self._stream = sampler.stream  # where the workers plan from; the loop's: _after
        streams = [n for n, s in zip(plan.mixture.sources, ordered) if is_stream(s)]
        user_collate = kwargs.pop("collate_fn", None)
        if streams:
            _check_stream_loader(streams, self._stream.shard, kwargs)
            collate = user_collate or torch.utils.data.default_collate
            dataset = MixtureIterableDataset(ordered, self._stream, transform)
            super().__init__(dataset, batch_size=None, collate_fn=_TaggedCollate(collate), **kwargs)
        else:  # without a collate_fn of the user's, whole batches are collated at once
            collate = user_collate or collated
            dataset = MixedDataset(ordered, transform, batched=user_collate is None)
            super().__init__(
                dataset, batch_sampler=sampler, collate_fn=_TaggedCollate(collate), **kwargs
            )
        self.names = plan.mixture.sources
        known = [(n, s) for n, s in zip(self.names, ordered) if not is_stream(s)]
        # fixed-length samples count tokens (windows of seq_len)
        self._tokens_per_sample = {
            n: s.sample_tokens() for n, s in known if isinstance(s.sample_tokens(), int)
        }
        # document sources count documents a sample holds (packed: per epoch)
        self._documents_per_sample = {
            n: len(s.documents) / len(s) for n, s in known if s.documents is not None
        }
        self._after = self._stream.position  # the position after the last batch handed out
        self._boundaries = {0: self._after.consumed}  # step -> plan counts before it (recent)

    def __iter__(self) -> Iterator[Any]:
        self._stream.seek(self._after)  # drop what was prefetched but never handed out
        for tagged in super().__iter__():
            self._handed(tagged.after)
            batch = tagged.value
            if isinstance(batch, dict) and isinstance(batch.get("source"), np.ndarray):
                batch["source"] = torch.from_numpy(batch["source"])
                batch["index"] = torch.from_numpy(batch["index"])
            yield batch

    def _handed(self, after: Position) -> None:
        self._after = after
        if after.micro == 0:
            self._boundaries[after.step] = after.consumed
            if len(self._boundaries) > 2:
                del self._boundaries[min(self._boundaries)]

    @property
    def plan(self) -> Plan:
        """The plan the loader follows."""
        return self._stream.plan

    @property
    def shard(self) -> Shard:
        """This rank's part of each global batch."""
        return self._stream.shard

    @property
    def log(self):
        """An online plan's weight log (``annealmix.weightlog.WeightLog``; its
        ``to_list()`` is what the state holds); empty for other plans."""
        return self._stream.log

    @property
    def step(self) -> int:
        """The step of the next batch the loop receives."""
        return self._after.step

    @property
    def consumed(self) -> np.ndarray:
        """Samples drawn from each source, all ranks together, before ``step``."""
        return self._stream._actual(self._after.consumed)

    def weights_at(self, step: int | np.ndarray) -> np.ndarray:
        """The weights the loader's plan follows at ``step`` (online: under its log)."""
        return self._stream.plan.weights_at(step, log=self._stream.log)

    def __len__(self) -> int:
        """Micro-batches left to hand out (needs ``num_steps``)."""
        stream = self._stream.copy()
        stream.seek(self._after)
        return len(stream)

    def state_dict(self) -> dict[str, Any]:
        """The state after the last batch handed to the loop (no replay)."""
        return self._stream.state_dict(self._after)

    def seek_step(self, step: int) -> None:
        """Go on from the start of ``step``, as a run that handed out every step
        before it (a resume from a step count alone: Megatron's and BlendCorpus's
        ``consumed_samples``). Online plans resume from their state (the log)."""
        if self.plan.online:
            raise ValueError(
                "an online plan's batches depend on its weight log: resume it with "
                "load_state_dict(state), which carries the log"
            )
        limit = self._stream.num_steps
        if limit is not None and _validate.integer("step", step, minimum=0) > limit:
            raise ValueError(f"step {step} is past the loader's num_steps {limit}")
        self._stream.seek_step(step)
        self._after = self._stream.position
        self._boundaries = {step: self._after.consumed}

    def load_state_dict(self, state: Mapping[str, Any], **kwargs: Any) -> None:
        """``Stream.load_state_dict`` (``replan``, ``previous_sources``)."""
        self._stream.load_state_dict(state, **kwargs)
        self._after = self._stream.position
        self._boundaries = {self._after.step: self._after.consumed}

    @property
    def commit_delay(self) -> int:
        """Steps from the last batch handed out to the first an update may change:
        past every micro-batch the workers may have prefetched (``prefetch_factor``
        x ``num_workers``), plus the step in progress."""
        prefetched = (self.prefetch_factor or 0) * self.num_workers if self.num_workers else 0
        return 1 + -(-prefetched // self._stream.shard.micro_batches)

    def commit(self, weights: Any, *, step: int | None = None, delay: int | None = None) -> int:
        """Online plans (``annealmix.online.OnlinePlan``): ``weights`` take effect at
        ``step``, by default ``delay`` (``commit_delay``) steps after the last batch
        handed out, so every rank that commits at the same point of its loop commits
        the same step, and no prefetched batch changes. Returns the step. Bad weights
        or a step already planned into prefetched batches are refused, the log
        unchanged. Weight for a source the schedule holds at 0 at ``step`` (a
        controller proposes for every source) is dropped with a warning naming it:
        the source enters when the schedule raises it."""
        if isinstance(self.dataset, MixtureIterableDataset):
            raise ValueError(
                "online updates need map-style sources: with a stream source the plan is "
                "walked inside the workers, which an update cannot reach"
            )
        if step is None:
            wait = self.commit_delay if delay is None else delay
            step = self._after.step + _validate.integer("delay", wait, minimum=1)
        self._stream.commit(step, weights, drop_unscheduled=True)
        return step

    def metrics(self, step: int, tokens_per_sample: Mapping[str, int] | None = None):
        """``annealmix.metrics.step_metrics`` of this loader's plan at ``step``.

        The steps the loop is at (and the one before) cost no replay: their counts
        travelled with the batches. Tokens are counted for sources of fixed-length
        samples (packed documents, token windows: ``tokens_per_sample``) unless
        ``tokens_per_sample`` names them, and for every source of a plan with lengths;
        documents for document sources (``Packed``: whole-document equivalents,
        ``Padded``: one per sample).
        """
        return _metrics.step_metrics(
            self._stream.plan,
            step,
            consumed=self._boundaries.get(step),
            log=self._stream.log,
            offset=self._stream.offset,
            tokens_per_sample=self._tokens_per_sample if tokens_per_sample is None
            else tokens_per_sample,
            documents_per_sample=self._documents_per_sample,
        )  # fmt: skip


def _check_stream_loader(streams: Sequence[str], shard: Shard, kwargs: Mapping[str, Any]) -> None:
    if kwargs.get("persistent_workers"):
        raise ValueError(
            f"persistent_workers=True cannot be used with stream sources ({', '.join(streams)}): "
            "a persistent worker keeps reading from where its previous pass stopped; leave "
            "persistent_workers unset"
        )
    readers = shard.world_size * max(1, int(kwargs.get("num_workers", 0)))
    if readers > 1:
        warnings.warn(
            f"stream sources {', '.join(streams)} are read in full by each of the "
            f"{shard.world_size} rank(s) x {max(1, int(kwargs.get('num_workers', 0)))} "
            f"worker(s): {readers} reads of every item (a stream has no random access, and "
            "reading only a share would change which item each draw gets). For large data, "
            "use a map-style source (a Hugging Face Dataset, token files)",
            stacklevel=3,
        )
