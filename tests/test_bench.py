import subprocess
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import peers  # noqa: E402
from peers import Result, Work, _measure, _mix_error, run, table  # noqa: E402


def test_mix_error_is_zero_for_a_perfect_stream_and_sqrt_pq_over_b_for_coin_flips():
    work = Work(num_sources=2, samples=1024 * 400)
    w = work.weights  # 1/3, 2/3
    per_batch = np.r_[
        np.zeros(round(1024 * w[0]), np.int64), np.ones(1024 - round(1024 * w[0]), np.int64)
    ]
    perfect = np.tile(per_batch, 400) * 10**9
    assert _mix_error(perfect, work) < 1 / 1024
    coins = (np.random.default_rng(0).random(1024 * 400) < w[1]).astype(np.int64) * 10**9
    expected = np.sqrt(w[0] * w[1] / 1024)
    assert abs(_mix_error(coins, work) - expected) < 0.15 * expected


def test_scheduled_mix_error_follows_the_cosine():
    work = Work(num_sources=2, samples=1024 * 50, schedule=True)
    target = work.weights_at(50)
    assert np.allclose(target[0], work.weights) and np.allclose(
        target[-1], work.weights[::-1], atol=1e-2
    )


def test_annealmix_rows_measure_and_beat_the_loop_on_mix_error():
    systems = [
        "annealmix exact, shuffle",
        "annealmix random, replacement",
        "post-style Python loop",
    ]
    results = run(2, 1024 * 60, budget_s=2, systems=systems)
    by = {r.system: r for r in results}
    assert all(r.samples_per_s and r.samples_per_s > 0 for r in results)
    exact = by["annealmix exact, shuffle"]
    assert exact.mix_error < 1 / 1024 < by["post-style Python loop"].mix_error
    assert exact.resume.startswith("nothing") and by["post-style Python loop"].resume.startswith(
        "replay"
    )
    text = table(results, "t")
    assert "| annealmix exact, shuffle |" in text and "1.0x" in text


def test_a_missing_peer_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(peers.SYSTEMS, "ghost", (lambda work: None, "no_such_peer_pkg"))
    result = Result(**_measure("ghost", Work(num_sources=2, samples=10), 1.0))
    assert (
        result.samples_per_s is None and result.note == "skipped: no_such_peer_pkg is not installed"
    )
    assert "skipped" in table([result], "t")


def test_the_short_peer_benchmark_prints_the_tables():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_peers.py"), "--sources", "2", "--samples",
         "30000", "--budget", "1", "--systems", "annealmix exact"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    assert "| annealmix exact, shuffle |" in out and "2 sources, fixed weights" in out


def test_the_short_token_benchmark_measures_within_the_proven_bound():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_tokens.py"), "--steps", "8", "--trials", "10"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    assert "| 3 |" in out and "resume from a saved state" in out
    row = next(line for line in out.splitlines() if line.startswith("| 2 to 6 sources |"))
    ahead, behind = (float(x) for x in row.strip("|").split("|")[1:])
    assert 0 < ahead < 1 and 0 < behind < 5


def test_the_short_bounds_benchmark_measures_every_bound_inside_it():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_bounds.py"), "--trials", "40"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip

    def row(label, after):  # the measured values: the numbers after the label
        line = next(x for x in out.split(after, 1)[1].splitlines() if x.startswith(label))
        cells = [v.strip() for v in line.strip("|").split("|")[1:]]
        return [float(v) for v in cells if v.replace(".", "", 1).isdigit()]

    two, more = row("| 2 sources |", "Exact plans"), row("| 3 to 8 sources |", "Exact plans")
    assert 0 < two[0] <= 0.5 and 0 < more[0] < 1
    ahead, behind = row("| 2 to 6 sources |", "Token plans")
    assert 0 < ahead < 1 and 0 < behind < 5  # behind: under the others' longest together
    ahead, behind = row("| 2 to 8 sources |", "Online plans")
    assert 0 < ahead < 1 and 0 < behind < 7


def test_the_short_scale_benchmark_opens_a_file_list_and_resumes():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_scale.py"), "--files", "40", "--step", "500",
         "--max-open", "10"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("| 40 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "at most 10 files mapped at once" in out
    assert [int(x) for x in cells[2].split(" / ")] == [10, 10]  # the pool, not 2 per pair
    assert all(c.endswith(" s") for c in (cells[1], cells[4], cells[5], cells[6], cells[7]))
