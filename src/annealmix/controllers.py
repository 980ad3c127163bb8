"""Controllers for online mixing: per-source losses in, new weights out.

A controller's ``update(losses, weights)`` is a pure function of its inputs and its
state (``state_dict``): the same all-reduced losses give the same weights on every
rank, and a resumed run that restores the state continues the same updates. Its
output goes to ``MixtureDataLoader.commit`` (or ``Stream.commit``), which logs it
for an exact replay (``annealmix.online``).

Reference controllers:

- ``LossProportional``: weights proportional to each source's loss to the power
  ``1 / temperature`` (temperature 1: proportional; large: towards uniform).
- ``DoReMi``: exponentiated-gradient ascent on each source's excess loss over a
  reference model's (Xie et al., 2023), smoothed towards uniform.
- ``EXP3``: the adversarial bandit of online data mixing (Albalak et al., 2023):
  importance-weighted losses as rewards, exploration ``min(1/K, sqrt(ln K / (K t)))``.

Guard rails, applied in this order to every proposal: ``floor`` (every source at
least this weight), ``max_change`` (the largest total-variation move from the
current weights; a larger move is shortened, which keeps the floor where the
current weights hold it), ``max_epochs`` (a source read that many times gets
weight 0, a hard cap that may move further; needs ``epochs`` at update time). Sources without a loss
in the window keep their last loss (or, before any, are left to the proposal's
prior). A controller proposes for every source; ``MixtureDataLoader.commit`` drops,
with a warning, the weight of a source the schedule holds at 0 where the update
takes effect (a tilt cannot raise it; it enters when the schedule raises it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _validate

__all__ = ["DoReMi", "EXP3", "Controller", "LossProportional"]


class Controller:
    """The shared part: sources, guard rails, the last loss of every source, state.

    Args:
        sources: the source names, in the plan's order.
        floor: the least weight of every source (``floor * len(sources) <= 1``).
        max_change: the largest total-variation distance an update may move the
            weights by (``None``: no limit).
        max_epochs: passes over a source after which it gets weight 0, by name.
    """

    def __init__(
        self,
        sources: Sequence[str],
        *,
        floor: float = 0.0,
        max_change: float | None = None,
        max_epochs: Mapping[str, float] | None = None,
    ) -> None:
        self.sources = tuple(sources)
        if not self.sources or len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources must be distinct names, got {list(sources)!r}")
        n = len(self.sources)
        self.floor = _validate.real("floor", floor)
        if not 0 <= self.floor <= 1 / n:
            raise ValueError(f"floor must be in [0, 1/{n}] for {n} sources, got {floor}")
        self.max_change = None if max_change is None else _validate.real("max_change", max_change)
        if self.max_change is not None and not 0 < self.max_change <= 1:
            raise ValueError(f"max_change must be in (0, 1], got {max_change}")
        self.max_epochs = dict(max_epochs or {})
        for name, cap in self.max_epochs.items():
            _validate.choice("source in max_epochs:", name, self.sources)
            if _validate.real(f"max_epochs of {name!r}", cap) <= 0:
                raise ValueError(f"max_epochs of {name!r} must be > 0, got {cap}")
        self.last_loss = np.full(n, np.nan)
        self.updates = 0

    def update(
        self,
        losses: Mapping[str, float],
        weights: Mapping[str, float] | Sequence[float] | np.ndarray,
        *,
        epochs: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """New weights from the window's mean loss per source (sources that drew no
        sample may be left out of a mapping; a NaN loss is refused: it is a diverged
        model, not a missing source) and the weights now in force."""
        current = self._vector("weights", weights, allow_missing=False)
        if not np.isclose(current.sum(), 1.0) or (current < 0).any():
            raise ValueError(f"weights must be on the simplex, got {current.tolist()}")
        seen = self._vector("losses", losses, allow_missing=True)
        given = [n in losses for n in self.sources] if isinstance(losses, Mapping) else True
        diverged = [n for n, bad in zip(self.sources, np.isnan(seen) & given) if bad]
        if diverged:
            raise ValueError(
                f"losses of {diverged} are NaN: the model diverged, or a mean over no sample "
                "(leave a source that drew no sample out of the losses); the previous "
                "weights stay in force"
            )
        if (seen[~np.isnan(seen)] < 0).any():
            raise ValueError(f"losses must be >= 0, got {dict(losses)}")
        before = self.state_dict()
        try:  # all or nothing: a refused update leaves the state as it was
            self.last_loss = np.where(np.isnan(seen), self.last_loss, seen)
            proposal = np.asarray(self._propose(seen, current), dtype=np.float64)
            self.updates += 1
            out = self._guard(current, proposal, epochs)
        except Exception:
            self.load_state_dict(before)
            raise
        return dict(zip(self.sources, out.tolist()))

    def _propose(self, seen: np.ndarray, current: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _guard(self, current: np.ndarray, proposal: np.ndarray, epochs) -> np.ndarray:
        if not np.isfinite(proposal).all() or (proposal < 0).any() or proposal.sum() <= 0:
            raise ValueError(
                f"{type(self).__name__} proposed {proposal.tolist()}; the previous weights "
                "stay in force"
            )
        w = proposal / proposal.sum()
        w = (1 - len(w) * self.floor) * w + self.floor
        if self.max_change is not None:
            moved = 0.5 * np.abs(w - current).sum()
            if moved > self.max_change:
                w = current + (w - current) * (self.max_change / moved)
        n = len(w)
        capped = np.zeros(n, dtype=bool)
        for k, name in enumerate(self.sources):
            cap = self.max_epochs.get(name)
            if cap is not None and epochs is not None and epochs.get(name, 0.0) >= cap:
                capped[k] = True
        if capped.all():
            raise ValueError(
                f"every source has reached its max_epochs {self.max_epochs}; nothing is "
                "left to mix: raise max_epochs or stop the run"
            )
        w = np.where(capped, 0.0, w)
        return w / w.sum()

    def _vector(self, what: str, values: Any, allow_missing: bool) -> np.ndarray:
        noun = {"losses": "loss", "weights": "weight", "reference": "loss"}.get(what, "value")
        vec = _validate.per_source(what, values, self.sources, allow_missing=allow_missing,
                                   noun=noun)  # fmt: skip
        if np.isinf(vec).any() or (not allow_missing and np.isnan(vec).any()):
            raise ValueError(f"{what} must be finite, got {values!r}")
        return vec

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON: what the next update depends on besides its inputs."""
        return {
            "updates": self.updates,
            "last_loss": [None if np.isnan(x) else float(x) for x in self.last_loss],
            **self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"controller state must be the dict state_dict() returned, got "
                            f"{type(state).__name__}")  # fmt: skip
        missing = [k for k in self.state_dict() if k not in state]
        if missing:
            raise ValueError(
                f"controller state lacks {missing}; pass what this controller's "
                "state_dict() returned"
            )
        loss = state["last_loss"]
        if len(loss) != len(self.sources):
            raise ValueError(
                f"controller state has {len(loss)} sources, this controller {len(self.sources)}"
            )
        self.updates = _validate.integer("controller state updates", state["updates"], minimum=0)
        self.last_loss = np.array([np.nan if x is None else float(x) for x in loss])
        self._load(state)

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: Mapping[str, Any]) -> None:
        pass


class LossProportional(Controller):
    """Weights proportional to ``loss ** (1 / temperature)``: more data where the
    model is worse. Sources with no loss yet keep their current share."""

    def __init__(self, sources: Sequence[str], *, temperature: float = 1.0, **guards: Any):
        super().__init__(sources, **guards)
        self.temperature = _validate.real("temperature", temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")

    def _propose(self, seen: np.ndarray, current: np.ndarray) -> np.ndarray:
        known = ~np.isnan(self.last_loss)
        if not known.any():
            return current
        score = np.where(known, np.power(np.where(known, self.last_loss, 0.0),
                                         1.0 / self.temperature), 0.0)  # fmt: skip
        if score[known].sum() <= 0:
            return current
        # the known sources share what they hold now, in proportion to their scores
        out = current.copy()
        out[known] = current[known].sum() * score[known] / score[known].sum()
        return out


class DoReMi(Controller):
    """Exponentiated-gradient ascent on excess loss, ``max(loss - reference, 0)``:
    ``log a += step_size * excess``, ``a = softmax``, weights
    ``(1 - smoothing) a + smoothing / K``.

    Args:
        reference: a reference model's loss per source (DoReMi's proxy/reference
            pair; or a target loss per source).
        step_size: the learning rate of the update.
        smoothing: the uniform share mixed in.
    """

    def __init__(
        self,
        sources: Sequence[str],
        *,
        reference: Mapping[str, float],
        step_size: float = 1.0,
        smoothing: float = 1e-3,
        **guards: Any,
    ) -> None:
        super().__init__(sources, **guards)
        self.reference = self._vector("reference", reference, allow_missing=False)
        if (self.reference < 0).any():
            bad = {n: float(r) for n, r in zip(self.sources, self.reference) if r < 0}
            raise ValueError(f"reference losses must be >= 0 (losses are), got {bad}")
        self.step_size = _validate.real("step_size", step_size)
        if self.step_size <= 0:
            raise ValueError(
                f"step_size must be > 0, got {step_size}: DoReMi moves weight toward the "
                "sources with the larger excess loss"
            )
        self.smoothing = _validate.unit_interval("smoothing", smoothing)
        self.log_alpha: np.ndarray | None = None  # from the weights in force at the first update

    def _propose(self, seen: np.ndarray, current: np.ndarray) -> np.ndarray:
        if self.log_alpha is None:
            self.log_alpha = np.log(np.maximum(current, 1e-300))
        excess = np.where(np.isnan(seen), 0.0, np.maximum(seen - self.reference, 0.0))
        self.log_alpha = self.log_alpha + self.step_size * excess
        alpha = np.exp(self.log_alpha - self.log_alpha.max())
        alpha /= alpha.sum()
        return (1 - self.smoothing) * alpha + self.smoothing / len(alpha)

    def _state(self) -> dict[str, Any]:
        return {"log_alpha": None if self.log_alpha is None else self.log_alpha.tolist()}

    def _load(self, state: Mapping[str, Any]) -> None:
        values = state.get("log_alpha")
        self.log_alpha = None if values is None else np.array(values, dtype=np.float64)


class EXP3(Controller):
    """The EXP3 bandit of online data mixing: each source's reward is its mean loss
    over the window divided by its weight (importance weighting), summed into
    ``R``; weights ``(1 - K e) softmax(e_prev R) + e`` with exploration
    ``e = min(1/K, sqrt(ln K / (K t)))`` at update ``t``."""

    def __init__(self, sources: Sequence[str], **guards: Any) -> None:
        super().__init__(sources, **guards)
        self.rewards = np.zeros(len(self.sources))
        self.last_rate = 1.0 / len(self.sources)

    def _propose(self, seen: np.ndarray, current: np.ndarray) -> np.ndarray:
        k = len(self.sources)
        drawn = ~np.isnan(seen) & (current > 0)
        self.rewards[drawn] += seen[drawn] / current[drawn]
        rate = min(1.0 / k, math.sqrt(math.log(k) / (k * (self.updates + 1)))) if k > 1 else 1.0
        logits = self.last_rate * self.rewards
        soft = np.exp(logits - logits.max())
        self.last_rate = rate
        return (1 - k * rate) * soft / soft.sum() + rate

    def _state(self) -> dict[str, Any]:
        return {"rewards": self.rewards.tolist(), "last_rate": self.last_rate}

    def _load(self, state: Mapping[str, Any]) -> None:
        self.rewards = np.array(state["rewards"], dtype=np.float64)
        self.last_rate = float(state["last_rate"])
