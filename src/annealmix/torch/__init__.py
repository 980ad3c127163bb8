"""PyTorch integration: the plan drives what every rank and DataLoader worker loads.

The only package that imports torch (extra ``torch``). Two paths, one loader:

- map-style, for random-access sources (anything with ``len`` and ``[]``):
  ``MixtureBatchSampler`` yields each micro-batch's ``(source id, index)`` keys and
  ``MixedDataset`` fetches them, so any ``num_workers`` splits whole micro-batches;
  the sampler is Stateful, so torchdata's ``StatefulDataLoader`` resumes it too;
- iterable, when any source is a stream (an ``IterableDataset``, a Hugging Face
  streaming dataset, a generator): ``MixtureIterableDataset`` reads each stream in
  order and keeps the draws the plan gives this rank and worker.

``MixtureDataLoader`` picks the path; every batch travels with the stream position
after it, so its ``state_dict()`` is exact however far the workers prefetched. Every sample comes
with its source id: ``{"source": id, "index": index, "sample": sample}``.

Modules: ``data`` (datasets and sampler), ``loader`` (the loader), ``dist`` (rank discovery and
metric all-reduce), ``losses`` (mixture-weighted and per-source losses); the stack
adapters are opt-in modules of their own: ``megatron`` (``MegatronDataset``, the
global stream by global sample index, for Megatron-LM's samplers).
"""

from .data import MixedDataset, MixtureBatchSampler, MixtureIterableDataset, collated
from .dist import all_reduce_metrics, resolve_local_rank, resolve_rank, resolve_shard
from .loader import MixtureDataLoader
from .losses import SourceLosses, loss_by_source, mix_losses

__all__ = [
    "MixedDataset",
    "MixtureBatchSampler",
    "MixtureDataLoader",
    "MixtureIterableDataset",
    "SourceLosses",
    "all_reduce_metrics",
    "collated",
    "loss_by_source",
    "mix_losses",
    "resolve_local_rank",
    "resolve_rank",
    "resolve_shard",
]
