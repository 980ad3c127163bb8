"""The mid-training study (``annealmix demo --study midtrain``): its design keeps the
exposure and the repetition it promises, its shared training is exact, its runs are
reproducible, and its command writes what the docs show."""

import json
from dataclasses import replace

import numpy as np
import pytest

from annealmix import Stream
from annealmix.demo.midtrain import (
    ARMS,
    DOMAINS,
    MIX_A,
    Study,
    lam,
    mixture,
    plan_counts,
    pools,
    tree,
)
from annealmix.demo.run import STUDY_PRESETS, STUDY_QUICK
from annealmix.demo.settings import RunConfig
from annealmix.plan import Plan

MATCHED = ("abrupt", "anneal", "preramp", "early", "recency")


@pytest.mark.parametrize(("steps", "decay"), [(2000, 400), (60, 12), (3000, 600), (997, 199)])
def test_matched_arms_give_mix_b_the_same_samples_and_the_control_matches_recency(steps, decay):
    exposure = {arm: lam(arm, steps, decay).sum() for arm in MATCHED}
    assert np.allclose(list(exposure.values()), decay, rtol=0, atol=1e-9), exposure
    age = {}
    for arm in MATCHED:
        w = lam(arm, steps, decay)
        age[arm] = (w * (steps - np.arange(steps))).sum() / w.sum()
        assert w.min() >= 0 and w.max() <= 1
    assert abs(age["abrupt"] - (decay + 1) / 2) < 1e-9  # the last `decay` steps, evenly
    assert abs(age["recency"] - age["anneal"]) <= 1.0  # as recent, to a step's rounding
    assert age["early"] > age["anneal"] > age["abrupt"]
    assert (lam("none", steps, decay) == 0).all()
    start = steps - decay
    jump = lam("abrupt", steps, decay)
    assert jump[start - 1] == 0 and jump[start] == 1  # at the decay's first step
    pre = lam("preramp", steps, decay)
    assert pre[start - 1] == pre[-1] and np.diff(pre[start - 1 :]).max() == 0  # done before


@pytest.mark.parametrize("arm", ARMS)
def test_each_arm_mixture_is_its_lambda_blend(arm):
    steps, decay = 500, 100
    w = mixture(arm, steps, decay).weights_at(np.arange(steps))
    x = lam(arm, steps, decay)[:, None]
    a = np.array([MIX_A[d] for d in DOMAINS])
    b = np.array([{"code": 0.4, "prose": 0.1, "math": 0.5}[d] for d in DOMAINS])
    assert np.abs(w - ((1 - x) * a + x * b)).max() < 1e-12


def _study(**kw) -> Study:
    return Study(run=replace(STUDY_QUICK, **kw.pop("run", {})), seeds=1, **kw)


def test_the_tree_trains_every_step_of_every_run_once_with_what_the_run_does():
    study = Study(run=STUDY_PRESETS["small"])
    runs = study.runs()
    nodes = tree(runs, study.run.steps)
    for i, run in enumerate(runs):
        path = [n for n in nodes if i in n.runs]
        assert [(n.start, n.end) for n in path][0][0] == 0 and path[-1].end == study.run.steps
        assert all(a.end == b.start and b.parent == a.id for a, b in zip(path, path[1:]))
        for n in path:  # every run of a node does the same over its steps
            first = runs[n.runs[0]].signature()[n.start : n.end]
            assert (run.signature()[n.start : n.end] == first).all()
    shared = sum(n.end - n.start for n in nodes)
    assert shared < 0.36 * len(runs) * study.run.steps  # 9,931 of 28,000 steps
    online = [n for n in nodes if any(runs[i].arm == "online" for i in n.runs)]
    assert [len(n.runs) for n in online] == [12, 2, 1, 1]  # both endings share its controller


def test_a_branch_sees_the_batches_its_own_plan_gives_from_step_zero():
    """A branch re-plans the parent's loader state; the draws are those of the run alone."""
    study = Study(run=STUDY_PRESETS["small"])
    runs = {r.name: r for r in study.runs()}
    sizes = {"code": 66073, "prose": 6556, "math": 59419}
    steps, decay = study.run.steps, study.decay_steps

    def plan(arm: str) -> Plan:
        return Plan(mixture(arm, steps, decay), global_batch_size=32, seed=3, sizes=sizes)

    alone = Stream(plan("anneal")).take(steps)
    trunk = Stream(plan("none"))
    before = trunk.take(1201)
    branch = Stream(plan("anneal"))
    branch.load_state_dict(trunk.state_dict(), replan=True)
    after = branch.take(steps - 1201)
    for field in ("sources", "draws", "indices"):
        joined = np.concatenate([getattr(before, field), getattr(after, field)])
        assert np.array_equal(joined, getattr(alone, field)), field
    assert runs["anneal@zero"].lam[1200] == 0 and runs["anneal@zero"].lam[1201] > 0


def test_pools_read_every_window_equally_often_or_refuse_naming_the_fix():
    study = Study(run=STUDY_PRESETS["small"])
    runs = study.runs()
    have = {"code": 66073, "prose": 6556, "math": 59419}
    assert pools(runs, have, 32) == {d: (n, 1) for d, n in have.items()}  # no window twice
    longer = Study(run=replace(STUDY_PRESETS["small"], steps=3000)).runs()
    got = pools(longer, have, 32)
    for k, d in enumerate(DOMAINS):
        size, passes = got[d]
        counts = [plan_counts(r, 32)[k] for r in longer if r.online_from is None]
        drawn = [c for c in counts if c > 0]
        assert size <= have[d] and max(drawn) + 1 <= size * passes
        assert min(drawn) > (passes - 1) * size  # every arm reads some window `passes` times
    assert got["prose"][1] == 2 and got["code"][1] == 2
    with pytest.raises(
        ValueError,
        match=r"^code: none@zero draws 172800 samples and "
        r"early@zero 153600 from 16536 windows, so no pool lets every arm "
        r"read each window the same number of times; use fewer --steps",
    ):
        pools(
            Study(run=replace(STUDY_PRESETS["small"], steps=3000, batch=64)).runs(),
            {"code": 16536, "prose": 1639, "math": 14854},
            64,
        )


def test_the_study_refuses_bad_designs_naming_the_value():
    with pytest.raises(ValueError, match=r"decay must be in \(0, 0.5\), got 0.6"):
        Study(run=RunConfig(steps=100), decay=0.6)
    with pytest.raises(ValueError, match=r"gives a decay of 2 steps.*use --steps 20 or more"):
        Study(run=RunConfig(steps=10))
    with pytest.raises(ValueError, match=r"decay 0.04 is too short for arm 'early'.*0.048"):
        Study(run=RunConfig(steps=1000), decay=0.04)
    Study(run=RunConfig(steps=1000), decay=0.04, arms=("abrupt", "anneal"))
    with pytest.raises(ValueError, match="unknown study arm 'anneel'"):
        Study(run=RunConfig(steps=100), arms=("abrupt", "anneel"))
    with pytest.raises(ValueError, match="ending 'high' must be in"):
        Study(run=RunConfig(steps=100), endings={"high": 1.5})


def test_answer_spans_mark_the_answer_bytes_of_whole_lines_only():
    from annealmix.demo.midtrain_train import answer_spans

    text = b"3 = 21\n12 + 5 = 17\n4 * 2 = 8\n7 - "
    spans = answer_spans(np.frombuffer(text, dtype=np.uint8)[None].astype(np.int64))
    # targets j predict byte j + 1: "17\n" and "8\n"; the first line is cut, the last open
    assert [text[a + 1 : b + 1] for _, a, b in spans] == [b"17\n", b"8\n"]


@pytest.fixture(scope="module")
def quick_records():
    pytest.importorskip("torch")
    from annealmix.demo.midtrain_train import run_study

    return run_study(_study(), jobs=2)


def test_a_run_trained_through_the_tree_is_the_run_trained_alone(quick_records):
    from annealmix.demo.midtrain_train import run_study

    alone = run_study(_study(arms=("anneal",), endings={"moderate": 0.3}), jobs=1)
    tree_run = next(r for r in quick_records if r["run"] == "anneal@moderate")
    assert len(alone) == 1
    for key, value in alone[0].items():
        if key != "seconds":
            assert tree_run[key] == value, key


def test_quick_study_runs_are_exact_in_exposure_and_repetition(quick_records):
    steps, batch = STUDY_QUICK.steps, STUDY_QUICK.batch
    by = {r["run"]: r for r in quick_records}
    assert len(by) == 14 and {r["seed"] for r in quick_records} == {0}
    for name, rec in by.items():
        assert len(rec["train_loss"]) == steps and rec["eval_step"][-1] == steps
        counts = np.array([rec[f"count_{d}"] for d in DOMAINS]).T
        assert (counts.sum(axis=1) == batch).all()
        assert rec["samples"] == dict(zip(DOMAINS, counts.sum(axis=0).tolist()))
        for d in DOMAINS:  # nothing read twice: every arm reads each window at most once
            assert rec["passes"][d] <= 1 and rec["samples"][d] <= rec["pools"][d]
        weights = np.array([rec[f"weight_{d}"] for d in DOMAINS]).T
        if rec["arm"] != "online":  # exact: within one sample of the schedule at every step
            drift = np.abs(np.cumsum(counts, axis=0) - batch * np.cumsum(weights, axis=0))
            assert drift.max() < 1.0, name
    math = {by[f"{a}@zero"]["samples"]["math"] for a in MATCHED}
    assert max(math) - min(math) <= 1  # equal exposure to the target domain
    assert by["none@zero"]["samples"]["math"] == 0
    online = by["online@zero"]
    assert online["log"] and online["samples"]["math"] > 0
    start = steps - 12  # the decay: both endings share the controller's steps before it
    moderate = by["online@moderate"]
    assert online["train_loss"][:start] == moderate["train_loss"][:start]
    assert online["train_loss"][start + 1 :] != moderate["train_loss"][start + 1 :]


def test_the_study_command_writes_its_tables_and_figures_and_repeats_bit_for_bit(
    tmp_path, capsys, quick_records
):
    from annealmix.cli import main

    for out in ("a", "b"):
        assert main(["demo", "--study", "midtrain", "--quick", "--out", str(tmp_path / out)]) == 0
    printed = capsys.readouterr().out
    assert "7 arms x 2 decay endings x 1 seeds, 60 steps" in printed
    assert "Paired with abrupt" in printed and "Learning rate decayed to zero" in printed
    assert "| anneal - recency | the shape alone" in printed
    assert "each arm decayed to zero minus to moderate, paired" in printed
    a, b = (json.loads((tmp_path / o / "results.json").read_text()) for o in ("a", "b"))
    for run in a["runs"] + b["runs"]:
        run.pop("seconds")
    assert a == b
    for run in a["runs"]:
        same = next(r for r in quick_records if r["run"] == run["run"])
        assert run["loss_math"] == same["loss_math"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| online | - | " in report and "| none | 0 | 0 | - | 0.00 | 1/1/0 |" in report
    assert "| abrupt | 192 | 96 | 6 | 1.00 | 1/1/1 |" in report  # the design, as scheduled
    for name in ("runs.csv", "curves.csv"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    pytest.importorskip("matplotlib")
    for name in ("design.png", "curves.png", "paired.png"):
        assert (tmp_path / "a" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dry_run_prints_the_design_and_the_segments_without_training(tmp_path, capsys):
    from annealmix.cli import main

    assert main(["demo", "--study", "midtrain", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "24 shared segments, 29,793 steps in all (straight runs: 84,000)" in printed
    assert "pool prose: 6,556 windows, read at most 1 time(s) by any arm" in printed
    assert "segment 21: steps 0-1600 for early@zero, early@moderate" in printed
    assert "recency  B samples  12800   math samples   6400   mean age  267 steps" in printed
    assert "online   its controller's weights from step 1200" in printed
    assert not (tmp_path / "o").exists()
    assert main(["demo", "--study", "midtrain", "--preset", "medium", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "a 8-layer model of width 512" in printed and "read at most 3 time(s)" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr-schedule", "wsd"], "--lr-schedule does not apply to --study midtrain"),
        (["--domains", "code,math"], "--domains does not apply to --study midtrain"),
        (["--arms", "abrupt,anneel"], "unknown arm 'anneel' (did you mean 'anneal'?)"),
        (["--steps", "3000", "--batch", "64", "--seq-len", "256"], "no pool lets every arm"),
    ],
)
def test_the_study_refuses_bad_flags_before_training(tmp_path, capsys, args, message):
    from annealmix.cli import main

    out = tmp_path / "out"
    assert main(["demo", "--study", "midtrain", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_dry_run_and_saved_results_need_a_study(capsys):
    from annealmix.cli import main

    assert main(["demo", "--dry-run"]) == 2
    assert "--dry-run needs --study midtrain" in capsys.readouterr().err
    assert main(["demo", "--from-results", "x.json"]) == 2
    assert "--from-results needs --study midtrain" in capsys.readouterr().err


def test_a_saved_study_reports_again_without_training(tmp_path, capsys):
    from annealmix.cli import main

    first = tmp_path / "first"
    assert main(["demo", "--study", "midtrain", "--quick", "--out", str(first)]) == 0
    again = tmp_path / "again"
    args = ["demo", "--study", "midtrain", "--from-results", str(first / "results.json")]
    assert main([*args, "--out", str(again)]) == 0
    for name in ("report.md", "runs.csv", "curves.csv", "results.json"):
        assert (again / name).read_text() == (first / name).read_text(), name
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": []}')
    capsys.readouterr()
    assert main(["demo", "--study", "midtrain", "--from-results", str(bad)]) == 2
    assert "has no design: give the results.json that annealmix demo" in capsys.readouterr().err
    bad.write_text("not json")
    assert main(["demo", "--study", "midtrain", "--from-results", str(bad)]) == 2
    assert "cannot read it as JSON" in capsys.readouterr().err


def test_the_summary_pairs_each_arm_with_abrupt_by_seed():
    from annealmix.demo.midtrain_report import summarise

    def rec(arm: str, seed: int, math: float) -> dict:
        steps = 10
        return {
            "arm": arm,
            "ending": "zero",
            "run": f"{arm}@zero",
            "seed": seed,
            "config": {"steps": steps},
            "decay_steps": 2,
            "eval_step": [0, 5, 10],
            "loss_math": [5, 4, math],
            "loss_code": [3, 2, 1.0],
            "loss_prose": [3, 2, 2.0],
            "answer_acc": [0, 0, 0.5],
            "exact": [0, 0, 0.1],
            "acc_code": [0, 0, 0.5],
            "acc_prose": [0, 0, 0.4],
            "weight_math": [0.0] * steps,
            "count_math": [0] * 8 + [16, 16],
            "passes": dict.fromkeys(DOMAINS, 1),
        }

    seeds = [2.0, 2.5, 3.0]  # seed-to-seed spread far above the arms' steady gap
    rows = summarise(
        [rec("abrupt", s, m) for s, m in enumerate(seeds)]
        + [rec("anneal", s, m - 0.01) for s, m in enumerate(seeds)]
    )
    anneal = next(r for r in rows if r["arm"] == "anneal")
    assert anneal["same_loss_math"] == ["abrupt"]  # the intervals overlap ...
    assert abs(anneal["d_loss_math"] + 0.01) < 1e-12 and anneal["d_loss_math_ci"] < 1e-9  # ...
    assert anneal["math_samples"] == 32 and anneal["math_age"] == 1.5  # but paired: lower


def test_each_checkpoint_goes_once_its_branches_are_trained(tmp_path, monkeypatch):
    import contextlib

    from annealmix.demo import midtrain_train

    kept = tmp_path / "checkpoints"
    kept.mkdir()
    monkeypatch.setattr(midtrain_train.tempfile, "TemporaryDirectory",
                        lambda **kw: contextlib.nullcontext(str(kept)))  # fmt: skip
    study = _study(arms=("none", "abrupt", "anneal"))
    assert sum(bool(n.children) for n in tree(study.runs(), study.run.steps)) == 3
    records = midtrain_train.run_study(study, jobs=2)
    assert len(records) == 6 and not list(kept.iterdir())
