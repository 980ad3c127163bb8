"""What every demo run shares (no torch here: the CLI reads it to build its options)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LR_SCHEDULES", "RunConfig"]

LR_SCHEDULES = ("constant", "wsd", "cosine")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    """Everything a run shares with the other arms (only the mix differs).

    Args:
        steps: optimizer steps.
        batch: samples per step.
        seq_len: bytes per sample (plus one target byte).
        dim, layers, heads: model size.
        lr: AdamW peak learning rate.
        lr_schedule: ``"constant"`` (default: keeps the learning-rate effect out of
            the switch), ``"cosine"`` (decay to 10% over the run) or ``"wsd"``
            (warm-up, stable, then a linear decay to ``lr_final`` from ``decay_start``
            on: the arms' moves, 25% to 75% of training, fall inside the decay, as a
            mid-training anneal does).
        decay_start: where ``"wsd"`` starts to decay, a fraction of training.
        lr_final: where ``"wsd"`` ends, a fraction of ``lr`` (0: decay to zero).
        warmup: linear warm-up steps.
        eval_every: steps between held-out evaluations.
        eval_samples: held-out samples per domain per evaluation.
        max_bytes: bytes read per domain (before the held-out split).
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        domains: the domain the arms start on and the one they move to.
    """

    steps: int = 600
    batch: int = 32
    seq_len: int = 64
    dim: int = 64
    layers: int = 2
    heads: int = 4
    lr: float = 3e-3
    lr_schedule: str = "constant"
    decay_start: float = 0.25
    lr_final: float = 0.1
    warmup: int = 30
    eval_every: int = 25
    eval_samples: int = 128
    max_bytes: int = 1 << 21
    device: str = "cpu"
    domains: tuple[str, str] = ("code", "prose")

    def learning_rate(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        if self.lr_schedule == "constant":
            return self.lr * warm
        progress = step / max(1, self.steps - 1)
        if self.lr_schedule == "wsd":
            decay = max(0.0, (progress - self.decay_start) / (1.0 - self.decay_start))
            return self.lr * warm * (1.0 - (1.0 - self.lr_final) * decay)
        return self.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
