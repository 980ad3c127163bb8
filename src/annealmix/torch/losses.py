"""Loss mixing, the post's third reading of X and Y, and per-source loss for logging."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["loss_by_source", "mix_losses"]


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
