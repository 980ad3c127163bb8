"""Loss mixing, the post's third reading of X and Y, and per-source loss for logging
and for online mixing (``SourceLosses``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from .. import _validate

__all__ = ["SourceLosses", "loss_by_source", "mix_losses"]


def mix_losses(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """The mixture-weighted loss ``sum_k w_k L_k / sum_k w_k`` over the sources given.

    With two sources and ``weights={"X": gamma, "Y": 1 - gamma}`` it is the post's
    third reading, ``gamma L_X + (1 - gamma) L_Y``. Take the weights from the plan:
    ``dict(zip(mixture.sources, mixture.weights_at(step)))``.
    """
    if not losses:
        raise ValueError("losses is empty; give at least one source's loss")
    missing = [name for name in losses if name not in weights]
    if missing:
        raise ValueError(f"no weight for source {missing[0]!r}; weights has {sorted(weights)}")
    total = sum(float(weights[name]) for name in losses)
    if not total > 0:
        raise ValueError(
            f"the weights of {sorted(losses)} sum to {total}; at least one must be > 0"
        )
    return sum(loss * (float(weights[name]) / total) for name, loss in losses.items())


def loss_by_source(
    loss: torch.Tensor, sources: torch.Tensor, names: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Mean per-sample loss of each source present in a batch (gradients flow).

    Args:
        loss: per-sample loss, shape (batch, ...); extra dims (tokens) are averaged.
        sources: the batch's source ids, shape (batch,).
        names: source names by id (``plan.mixture.sources``).
    """
    if loss.shape[:1] != sources.shape:
        raise ValueError(
            f"loss has shape {tuple(loss.shape)} but sources {tuple(sources.shape)}; "
            "pass the per-sample loss (reduction='none') and the batch's 'source' field"
        )
    per_sample = loss.reshape(loss.shape[0], -1).mean(dim=1)
    ids = sources.to(device=loss.device, dtype=torch.long)
    sums = torch.zeros(len(names), dtype=per_sample.dtype, device=loss.device)
    sums = sums.index_add(0, ids, per_sample)
    counts = torch.bincount(ids, minlength=len(names))
    return {n: sums[k] / counts[k] for k, n in enumerate(names) if counts[k] > 0}


class SourceLosses:
    """Each source's mean loss over a window of steps, summed over the ranks, and its
    exponential moving average: what online controllers read, and what logs show.

    Per-sample losses are accumulated as integers (units of 2**-32), so the sums,
    and the all-reduce over ranks, are exact in any order: the same losses give the
    same means whatever the world size, micro-batches or workers.

    Args:
        names: source names by id (``plan.mixture.sources``).
        ema: the moving average's decay per ``reduce``, in [0, 1).
        group: the ``torch.distributed`` group to sum over (default: the world; the
            data-parallel group under model parallelism).
    """

    SCALE = 1 << 32

    def __init__(self, names: tuple[str, ...], *, ema: float = 0.9, group: Any = None) -> None:
        self.names = tuple(names)
        self.ema_decay = _validate.unit_interval("ema", ema)
        if self.ema_decay >= 1:
            raise ValueError(f"ema must be < 1, got {ema}")
        self.group = group
        n = len(self.names)
        self._sums = torch.zeros(n, dtype=torch.int64)
        self._counts = torch.zeros(n, dtype=torch.int64)
        self.last: dict[str, float] = {}
        self.ema: dict[str, float] = {}

    def add(self, loss: torch.Tensor, sources: torch.Tensor) -> None:
        """Count a micro-batch: per-sample losses (extra dims averaged) and source ids."""
        if loss.shape[:1] != sources.shape:
            raise ValueError(
                f"loss has shape {tuple(loss.shape)} but sources {tuple(sources.shape)}; "
                "pass the per-sample loss (reduction='none') and the batch's 'source' field"
            )
        per_sample = loss.detach().reshape(loss.shape[0], -1).double().mean(dim=1).cpu()
        if not torch.isfinite(per_sample).all():
            raise ValueError("a per-sample loss is not finite; it would poison every source's mean")
        fixed = torch.round(per_sample * self.SCALE).to(torch.int64)
        ids = sources.detach().cpu().to(torch.long)
        self._sums.index_add_(0, ids, fixed)
        self._counts += torch.bincount(ids, minlength=len(self.names))

    def reduce(self) -> dict[str, float]:
        """The window's mean loss of each source that drew samples in it, over all
        ranks (every rank must call it at the same step); starts a new window."""
        buf = torch.cat([self._sums, self._counts])
        if _distributed():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
        n = len(self.names)
        sums, counts = buf[:n].tolist(), buf[n:].tolist()
        self.last = {
            name: (s / self.SCALE) / c for name, s, c in zip(self.names, sums, counts) if c
        }
        for name, value in self.last.items():
            old = self.ema.get(name)
            self.ema[name] = (
                value if old is None else self.ema_decay * old + (1 - self.ema_decay) * value
            )
        self._sums.zero_()
        self._counts.zero_()
        return dict(self.last)

    def metrics(self, prefix: str = "mix") -> dict[str, float]:
        """``{prefix}/loss/{name}`` (the last window) and ``{prefix}/loss_ema/{name}``."""
        out = {f"{prefix}/loss/{n}": v for n, v in self.last.items()}
        return out | {f"{prefix}/loss_ema/{n}": v for n, v in self.ema.items()}

    def state_dict(self) -> dict[str, Any]:
        """The open window, summed over the ranks (a collective: every rank calls it
        at the same step), and the averages: the same on every rank, so a resume on
        any world size reads the same means at the next ``reduce``."""
        buf = torch.cat([self._sums, self._counts])
        if _distributed():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
        n = len(self.names)
        return {
            "sums": buf[:n].tolist(),
            "counts": buf[n:].tolist(),
            "last": dict(self.last),
            "ema": dict(self.ema),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The saved window goes to the group's first rank, the others start empty."""
        if len(state["sums"]) != len(self.names):
            raise ValueError(
                f"loss state has {len(state['sums'])} sources, this tracker {len(self.names)}"
            )
        first = not _distributed() or dist.get_rank(self.group) == 0
        self._sums = torch.tensor(state["sums"], dtype=torch.int64) * int(first)
        self._counts = torch.tensor(state["counts"], dtype=torch.int64) * int(first)
        self.last, self.ema = dict(state["last"]), dict(state["ema"])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()
