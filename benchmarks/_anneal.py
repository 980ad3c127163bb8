"""The anneal several benchmarks plan: random start and end mixes (Dirichlet, seed 0)
over ``sources`` sources, joined by a cosine over the second half of ``steps``."""

from __future__ import annotations

import numpy as np

from annealmix import Mixture, Phase


def second_half_anneal(sources: int, steps: int) -> Mixture:
    rng = np.random.default_rng(0)
    names = [f"s{i:02d}" for i in range(sources)]
    start, end = rng.dirichlet(np.ones(len(names))), rng.dirichlet(np.ones(len(names)))
    return Mixture(weights=dict(zip(names, start)), phases=[
        Phase(start_step=steps // 2, end_step=steps - 1, weights=dict(zip(names, end)),
              schedule="cosine")])  # fmt: skip
