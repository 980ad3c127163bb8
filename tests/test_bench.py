import numpy as np

from annealmix import bench
from annealmix.bench import Result, Work, _measure, _mix_error, run, table


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
    monkeypatch.setitem(bench.SYSTEMS, "ghost", (lambda work: None, "no_such_peer_pkg"))
    result = Result(**_measure("ghost", Work(num_sources=2, samples=10), 1.0))
    assert (
        result.samples_per_s is None and result.note == "skipped: no_such_peer_pkg is not installed"
    )
    assert "skipped" in table([result], "t")


def test_annealmix_bench_prints_the_tables(capsys):
    from annealmix.cli import main

    assert (
        main(["bench", "--samples", "30000", "--budget", "1", "--systems", "annealmix exact"]) == 0
    )
    out = capsys.readouterr().out
    assert "**2 sources, fixed weights**" in out and "cosine schedule" in out
    assert out.count("| annealmix exact, shuffle |") == 2
    assert main(["bench", "--systems", "nothing-like-this"]) == 2


def test_headline_summarises_two_source_counts():
    from annealmix.bench import headline

    def rows(rate):
        return [
            Result(
                system="annealmix exact, shuffle",
                samples_per_s=rate,
                setup_s=0.0,
                peak_mb=1,
                mix_error=0.0005,
                resume="nothing: next batch from the saved state in 0.001 s",
            ),
            Result(
                system="peer",
                samples_per_s=rate / 20,
                setup_s=1.0,
                peak_mb=9,
                mix_error=0.01,
                resume="replay: from the start (about 9 s at its measured rate)",
            ),
            Result(system="absent", note="skipped: absent is not installed"),
        ]

    text = headline(rows(10e6), rows(8e6), (2, 8))
    assert (
        "| peer | 0.5 M/s | 0.4 M/s | 20.0x / 20.0x | 0.0100 | 9 MB | replay: from the start |"
        in text
    )
    assert "| absent | skipped: absent is not installed |" in text
