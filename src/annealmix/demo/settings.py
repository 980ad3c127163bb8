"""What every demo run shares (no torch here: the CLI reads it to build its options)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RunConfig"]


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
            the switch) or ``"cosine"`` (decay to 10% over the run).
        warmup: linear warm-up steps.
        eval_every: steps between held-out evaluations.
        eval_samples: held-out samples per domain per evaluation.
        max_bytes: bytes read per domain (before the held-out split).
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
    """

    steps: int = 600
    batch: int = 32
    seq_len: int = 64
    dim: int = 64
    layers: int = 2
    heads: int = 4
    lr: float = 3e-3
    lr_schedule: str = "constant"
    warmup: int = 30
    eval_every: int = 25
    eval_samples: int = 128
    max_bytes: int = 1 << 21
    device: str = "cpu"

    def learning_rate(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        if self.lr_schedule == "constant":
            return self.lr * warm
        progress = step / max(1, self.steps - 1)
        return self.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
