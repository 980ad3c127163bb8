import math
import subprocess
import sys

import pytest
from helpers import assert_resume_equivalent

from annealmix import MixtureSampler, make_schedule


@pytest.mark.parametrize("n", [2, 3, 10, 1001])
def test_make_schedule_returns_the_posts_values(n):
    post_linear = [0.1 + (0.9 - 0.1) * t / (n - 1) for t in range(n)]
    post_cosine = [0.1 + 0.8 * (1 - math.cos(math.pi * t / (n - 1))) / 2 for t in range(n)]
    assert (
        max(abs(a - b) for a, b in zip(make_schedule(n, 0.1, 0.9, "linear"), post_linear)) < 1e-12
    )
    assert (
        max(abs(a - b) for a, b in zip(make_schedule(n, 0.1, 0.9, "cosine"), post_cosine)) < 1e-12
    )


def test_other_kinds_come_from_the_registry():
    assert make_schedule(5, kind="step") == [0, 0, 1, 1, 1]


def test_the_posts_example_runs_unchanged():
    code = """
from annealmix import make_schedule, MixtureSampler
X = [("X", i) for i in range(5)]
Y = [("Y", i) for i in range(5)]
schedule = make_schedule(10, start=0.1, end=0.9, kind="cosine")
sampler = MixtureSampler(X, Y, schedule)
for t, sample in sampler:
    print(f"t={t:02d}, gamma={schedule[t]:.2f}, sample={sample}")
"""
    lines = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("t=00, gamma=0.10, sample=(") and lines[9].startswith(
        "t=09, gamma=0.90, sample=("
    )


def test_sampler_draws_x_with_probability_gamma():
    X, Y = list(range(10)), list(range(100, 110))
    for gamma in (0.0, 0.3, 1.0):
        picks = [s < 100 for _, s in MixtureSampler(X, Y, [gamma] * 20_000, seed=1)]
        assert abs(sum(picks) / len(picks) - gamma) < 0.015


def test_sampler_is_seeded_and_resumable():
    X, Y = list("abcde"), list("vwxyz")
    sched = make_schedule(50, kind="linear")
    assert list(MixtureSampler(X, Y, sched, seed=3)) == list(MixtureSampler(X, Y, sched, seed=3))
    assert list(MixtureSampler(X, Y, sched, seed=3)) != list(MixtureSampler(X, Y, sched, seed=4))

    def make():
        return MixtureSampler(X, Y, sched, seed=3)

    def advance(sampler):
        it = iter(sampler)
        return next(it)

    assert_resume_equivalent(make, advance, total=50)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MixtureSampler([], [1], [0.5]), "X is empty"),
        (lambda: MixtureSampler([1], [], [0.5]), "Y is empty"),
        (lambda: MixtureSampler([1], [2], [1.5]), "schedule[0] must lie in [0, 1], got 1.5"),
        (lambda: MixtureSampler([1], 5, [0.5]), "Y must be a sequence"),
        (lambda: make_schedule(1), "n_steps must be >= 2"),
        (lambda: make_schedule(5, kind="cosin"), "Unknown schedule kind: cosin"),
        (lambda: make_schedule(5, start=-1), "start must lie in [0, 1]"),
    ],
)
def test_where_the_post_crashes_we_explain(build, message):
    with pytest.raises((ValueError, TypeError)) as err:
        build()
    assert message in str(err.value)
