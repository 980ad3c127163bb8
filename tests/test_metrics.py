import numpy as np
import pytest

from annealmix import Mixture, Phase, Plan
from annealmix.metrics import rank_counts, step_metrics

MIX = Mixture(
    weights={"web": 3.0, "code": 1.0, "math": 1.0},
    phases=[Phase(start_step=4, end_step=30, weights={"web": 1, "code": 1, "math": 3})],
)
SIZES = {"web": 500, "code": 90, "math": 70}


def test_step_metrics_follow_the_plan():
    p = Plan(MIX, global_batch_size=48, seed=3, sizes=SIZES)
    m = step_metrics(p, 10, tokens_per_sample={"web": 128})
    counts = p.counts(10)[0]
    consumed = p.consumed(11)
    for k, name in enumerate(MIX.sources):
        assert m[f"mix/count/{name}"] == counts[k]
        assert m[f"mix/share/{name}"] == counts[k] / 48
        assert m[f"mix/samples/{name}"] == consumed[k]
        assert m[f"mix/epochs/{name}"] == consumed[k] / SIZES[name]
        assert m[f"mix/weight/{name}"] == pytest.approx(MIX.weights_at(10)[k])
    assert m["mix/tokens/web"] == consumed[0] * 128
    assert "mix/tokens/code" not in m
    with pytest.raises(ValueError, match="unknown source in tokens_per_sample: 'wbe'"):
        step_metrics(p, 0, tokens_per_sample={"wbe": 1})


def test_metrics_walk_on_to_a_fresh_plans_values():
    p = Plan(MIX, global_batch_size=48, seed=3, sizes=SIZES)
    for step in [*range(0, 40, 3), 5, 0]:  # walking on, and back
        fresh = Plan(MIX, global_batch_size=48, seed=3, sizes=SIZES)
        assert step_metrics(p, step) == step_metrics(fresh, step)


def test_rank_counts_count_samples_and_tokens():
    assert rank_counts(np.array([0, 2, 2]), MIX.sources) == {
        "mix/rank_count/web": 1.0,
        "mix/rank_count/code": 0.0,
        "mix/rank_count/math": 2.0,
    }
    with_tokens = rank_counts(np.array([0, 2, 2]), MIX.sources, lengths=np.array([5, 7, 9]))
    assert with_tokens["mix/rank_tokens/math"] == 16.0 and with_tokens["mix/rank_tokens/code"] == 0
    with pytest.raises(ValueError, match="lengths has 2 entries for 3 samples"):
        rank_counts(np.array([0, 2, 2]), MIX.sources, lengths=np.array([1, 2]))


def test_a_replan_offset_counts_in_the_cumulative_figures():
    p = Plan(MIX, global_batch_size=48, seed=3, sizes=SIZES)
    plain = step_metrics(p, 10, tokens_per_sample={"web": 128})
    offset = np.array([7, 0, -2])
    moved = step_metrics(p, 10, offset=offset, tokens_per_sample={"web": 128})
    for k, name in enumerate(MIX.sources):
        assert moved[f"mix/samples/{name}"] == plain[f"mix/samples/{name}"] + offset[k]
        assert moved[f"mix/epochs/{name}"] == moved[f"mix/samples/{name}"] / SIZES[name]
        assert moved[f"mix/count/{name}"] == plain[f"mix/count/{name}"]  # the step's own mix
    assert moved["mix/tokens/web"] == (plain["mix/samples/web"] + 7) * 128
