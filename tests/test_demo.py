import json
import math

import numpy as np
import pytest

from annealmix.demo.arms import ARMS, DEFAULT_ARMS, load_arms
from annealmix.demo.data import domain_bytes, split
from annealmix.demo.report import measure


def test_quick_demo_runs_end_to_end_with_sane_outputs(tmp_path, capsys):
    pytest.importorskip("torch")
    from annealmix.cli import main

    assert main(["demo", "--quick", "--out", str(tmp_path), "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ranked by final mean held-out loss" in printed
    for name in ("results.json", "runs.csv", "curves.csv", "leaderboard.md"):
        assert (tmp_path / name).stat().st_size > 0
    pytest.importorskip("matplotlib")
    for name in ("losses.png", "grad_norm.png", "mix.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["arm"] for r in results["leaderboard"]) == sorted(DEFAULT_ARMS)
    ranks = [r["final_mean"] for r in results["leaderboard"]]
    assert ranks == sorted(ranks)
    for run in results["runs"]:
        for domain in ("code", "prose"):
            curve = run[f"eval_{domain}"]
            assert all(math.isfinite(x) for x in curve)
            assert curve[-1] < curve[0], f"{run['arm']}: held-out {domain} loss did not fall"
        assert run["max_count_error"] <= 0.5 + 1e-9  # two sources: within half a sample
        steps = len(run["weight_code"])
        realized = np.cumsum(np.array(run["share_code"]) * run["config"]["batch"])
        assert realized[-1] == run["samples"]["code"] and steps == run["config"]["steps"]
    symmetric = [r for r in results["leaderboard"] if r["arm"] in ("abrupt", "linear", "cosine")]
    assert {r["samples_code"] for r in symmetric} == {symmetric[0]["samples_prose"]}


def test_symmetric_arms_give_both_domains_the_same_samples():
    from annealmix import Plan

    for name in ("abrupt", "linear", "cosine", "constant"):
        plan = Plan(ARMS[name].mixture(600), global_batch_size=32)
        code, prose = plan.consumed(600)
        assert abs(code - prose) <= 1, name


def test_arms_load_from_toml_with_named_errors(tmp_path):
    good = tmp_path / "arms.toml"
    good.write_text(
        '[[arms]]\nname = "fast"\nschedule = { name = "sigmoid", steepness = 20 }\n'
        "end = { code = 0.1, prose = 0.9 }\nwindow = [0.4, 0.6]\n"
    )
    (arm,) = load_arms(good)
    assert arm.name == "fast" and arm.window == (0.4, 0.6) and arm.end["code"] == 0.1
    assert arm.mixture(100).weights_at(99).tolist() == pytest.approx([0.1, 0.9])
    cases = {
        '[[arms]]\nname = "x"\nschedul = "cosine"\n': "unknown key in .* 'schedul' .*'schedule'",
        '[[arms]]\nname = "x"\nschedule = "cosin"\n': "did you mean 'cosine'",
        '[[arms]]\nname = "x"\nschedule = "linear"\nend = { cod = 1 }\n': "'cod'",
        '[[arms]]\nname = "x"\nschedule = "linear"\nwindow = [0.6, 0.4]\n': "start < end",
        "title = 1\n": "unknown key in .*'title'",
        "": "no \\[\\[arms\\]\\] tables",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_arms(bad)


def test_domains_are_deterministic_and_split_without_overlap():
    code = domain_bytes("code", 1 << 16)
    assert code.dtype == np.uint8 and code.size == 1 << 16
    assert np.array_equal(code, domain_bytes("code", 1 << 16))
    prose = domain_bytes("prose")
    train, held = split(prose, 0.1)
    assert train.size + held.size == prose.size and held.size == round(prose.size * 0.1)
    with pytest.raises(ValueError, match="unknown domain 'poetry'"):
        domain_bytes("poetry")


def synthetic(code, switch=(4, 8), steps=12):
    evals = list(range(0, steps + 1))
    return {
        "config": {"steps": steps},
        "switch": list(switch),
        "weight_code": [1.0] * switch[0]
        + [0.5] * (switch[1] - switch[0])
        + [0.0] * (steps - switch[1]),
        "eval_step": evals,
        "eval_code": code,
        "eval_prose": [3.0 - 0.1 * i for i in evals],
        "train_loss": [2.0] * steps,
        "grad_norm": [1.0, 1.2] * (steps // 2),
        "share_code": [1.0] * steps,
        "max_count_error": 0.0,
        "tokens_per_s": 1.0,
    }


def test_measures_on_a_known_curve():
    code = [3, 2.6, 2.3, 2.1, 2.0, 2.4, 2.6, 2.2, 1.9, 1.9, 2.0, 2.1, 2.2]
    m = measure(synthetic(code))
    level = (2.3 + 2.1 + 2.0) / 3  # the last three evaluations up to the switch at step 4
    assert m["code_rise"] == pytest.approx(2.6 - level)
    assert m["code_rise_steps"] == 3  # steps 5, 6 and 7 stay above that level
    assert m["prose_rise"] == 0 and m["prose_rise_steps"] == 0  # prose only falls
    assert m["forgetting"] == pytest.approx(2.2 - 1.9)
    assert m["final_mean"] == pytest.approx((2.2 + 1.8) / 2)
    assert np.isnan(m["turn"]) and np.isnan(m["v_jump"]) and np.isnan(m["alignment"])


def test_the_gradient_measures_on_known_curves():
    # the mix moves at steps 4..7; widened to the default window (steps 3..8) and a
    # margin of max(5, 12 // 10) = 5 steps: [3, 12), against steps 0..2 before it
    rec = synthetic([2.0] * 13)
    rec["grad_cos"] = [float("nan"), 0.9, 0.8, 0.9, 0.2, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    rec["v_ratio"] = [float("nan"), 1.0, 1.0, 1.0, 6.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    rec["align"] = [0.5, 0.5, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5]
    m = measure(rec)
    assert m["turn"] == pytest.approx((0.9 + 0.8) / 2 - 0.2)  # the NaN at step 0 skipped
    assert m["v_jump"] == pytest.approx(6.0)
    assert m["alignment"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.5) / 5)  # evals 4..8


def test_the_wsd_schedule_decays_from_the_window_start():
    from annealmix.demo.settings import RunConfig

    cfg = RunConfig(steps=101, lr=1.0, warmup=10, lr_schedule="wsd")
    assert cfg.learning_rate(4) == pytest.approx(0.5)  # warm-up
    assert cfg.learning_rate(20) == cfg.learning_rate(25) == 1.0  # stable up to 25%
    assert cfg.learning_rate(100) == pytest.approx(0.1)  # linear decay to 10% at the end
    assert cfg.learning_rate(50) == pytest.approx(1 - 0.9 * (0.5 - 0.25) / 0.75)


def test_the_learning_rate_axis_ranks_arms_within_each_schedule():
    from annealmix.demo.report import leaderboard, summarise

    records = []
    for lr, base in (("constant", 2.0), ("wsd", 1.0)):
        for arm, shift in (("abrupt", 0.1), ("cosine", 0.0)):
            for seed in range(2):
                rec = synthetic([base + shift + 0.01 * seed] * 13)
                rec |= {"arm": f"{arm}@{lr}", "seed": seed, "samples": {"code": 1, "prose": 1}}
                rec["config"] = {"steps": 12, "lr_schedule": lr}
                records.append(rec)
    rows = summarise(records)
    assert [r["arm"] for r in rows] == ["cosine@constant", "abrupt@constant", "cosine@wsd",
                                        "abrupt@wsd"]  # fmt: skip
    assert all(r["lr_schedule"] in r["arm"] for r in rows)
    assert all(o.split("@")[1] == r["lr_schedule"] for r in rows for o in r["indistinguishable"])
    table = leaderboard(rows)
    assert "learning rate: constant" in table and "learning rate: wsd" in table
    assert sum(line.startswith("| 1 |") for line in table.splitlines()) == 2  # per schedule


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms", "abrupt,cosin"], "unknown arm 'cosin' (did you mean 'cosine'?)"),
        (["--arms", ","], "--arms is empty"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["--lr-schedule", "wsd,linear"], "unknown --lr-schedule 'linear'"),
        (["--lr-schedule", "wsd,wsd"], "names a schedule twice"),
        (["--lr-schedule", ","], "--lr-schedule is empty"),
        (["--domains", "code,code"], "two different domains"),
        (["--domains", "code,poetry"], "unknown domain 'poetry'"),
    ],
)
def test_demo_refuses_bad_arms_and_devices_before_training(tmp_path, capsys, args, message):
    pytest.importorskip("torch")
    from annealmix.cli import main

    assert main(["demo", "--quick", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("0", "--steps must be >= 1, got 0"),
        ("100", "--steps 100 is too short: arm 'linear' is measured from step 26 (where its "
         "mix moves), before the 51 steps the measures need first (30 warm-up steps + 5, "
         "three evaluations 25 steps apart); use --steps 198 or more"),
    ],
)  # fmt: skip
def test_demo_refuses_runs_too_short_for_its_measures_before_writing(tmp_path, capsys, steps,
                                                                     message):  # fmt: skip
    pytest.importorskip("torch")
    from annealmix.cli import main

    args = ["demo", "--steps", steps, "--arms", "abrupt,linear", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_demo_without_torch_says_which_extra_to_install(tmp_path, capsys, monkeypatch):
    import sys

    from annealmix.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "pip install -c constraints.txt 'annealmix[torch]'" in capsys.readouterr().err


def test_the_shortest_run_the_check_names_is_long_enough():
    from dataclasses import replace

    from annealmix.demo.run import _check_steps
    from annealmix.demo.settings import RunConfig

    arms = [ARMS[n] for n in DEFAULT_ARMS]
    _check_steps(replace(RunConfig(), steps=203), arms)
    with pytest.raises(ValueError, match="arm 'constant' .* use --steps 203 or more"):
        _check_steps(replace(RunConfig(), steps=202), arms)


def test_smoothing_keeps_the_edges_where_they_are():
    from annealmix.demo.plots import smooth

    flat = smooth(np.full(20, 2.15))
    assert np.allclose(flat, 2.15)  # zero padding gave 1.29 at the first point
    ramp = smooth(np.arange(10.0))
    assert ramp[0] == pytest.approx(np.mean([0, 1, 2])) and ramp[5] == pytest.approx(5.0)


def test_the_device_is_chosen_automatically():
    torch = pytest.importorskip("torch")
    from annealmix.demo.run import _device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert _device("auto") == expected and _device("cpu") == "cpu"


def test_confidence_intervals_and_indistinguishable_arms():
    from annealmix.demo.report import confidence, summarise

    assert confidence([1.0, 2.0, 3.0]) == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    assert math.isnan(confidence([1.0]))
    records = []
    for arm, finals in (
        ("a", [1.0, 1.01, 0.99]),
        ("b", [1.02, 1.03, 1.01]),
        ("c", [2.0, 2.01, 1.99]),
    ):
        for seed, final in enumerate(finals):
            rec = synthetic([3, 2.6, 2.3, 2.1, 2.0, 2.4, 2.6, 2.2, 1.9, 1.9, 2.0, 2.1, final])
            rec["eval_prose"] = [final] * len(rec["eval_prose"])
            samples = {"code": 1, "prose": 1}
            records.append(rec | {"arm": arm, "seed": seed, "samples": samples})
    rows = {r["arm"]: r for r in summarise(records)}
    assert rows["a"]["indistinguishable"] == ["b"] and rows["c"]["indistinguishable"] == []


def test_the_online_arm_learns_its_tilt_and_logs_it(tmp_path, capsys):
    pytest.importorskip("torch")
    from annealmix.cli import main

    args = ["demo", "--quick", "--arms", "online,cosine", "--seeds", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    online = next(r for r in results["runs"] if r["arm"] == "online")
    log = online["log"]
    # an update every 10 steps, in force from the step after the next (commit_delay)
    assert log and all(step % 10 == 1 for step, _ in log)
    assert online["max_count_error"] < 1  # two sources: within a sample of the realized mix
    cosine = next(r for r in results["runs"] if r["arm"] == "cosine")
    assert online["weight_code"] != cosine["weight_code"]  # the tilt moved the mix
    realized = np.cumsum(np.array(online["share_code"]) * online["config"]["batch"])
    assert realized[-1] == online["samples"]["code"]


def test_presets_size_the_model_and_flags_override_them(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import annealmix.demo.run as demo_run
    from annealmix.cli import main
    from annealmix.demo.model import GPT, GPTConfig

    medium = demo_run.PRESETS["medium"]
    model = GPT(GPTConfig(seq_len=medium.seq_len, num_layers=medium.layers,
                          num_heads=medium.heads, dim=medium.dim))  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    assert 10e6 < params < 100e6 and medium.steps >= 1000  # tens of millions, thousands
    assert demo_run.PRESETS["small"] == demo_run.RunConfig()  # the default demo is unchanged
    seen = {}

    class Stop(Exception):
        pass

    def fake_run(arms, seeds, cfg, jobs, schedules):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(demo_run, "run", fake_run)
    with pytest.raises(Stop):
        main(["demo", "--preset", "medium", "--steps", "1200", "--device", "cpu",
              "--out", str(tmp_path)])  # fmt: skip
    assert seen["cfg"].steps == 1200 and seen["cfg"].dim == 512 and seen["cfg"].device == "cpu"


def test_the_generated_math_domain_is_exact_arithmetic_and_deterministic():
    from annealmix.demo.data import domain_bytes

    raw = domain_bytes("math", 1 << 14).tobytes().decode("ascii")
    assert raw == domain_bytes("math", 1 << 14).tobytes().decode("ascii")
    lines = raw.splitlines()[:-1]  # the last may be cut
    for line in lines[:200]:
        x, op, y, eq, value = line.split()
        assert eq == "=" and int(value) == {"+": int(x) + int(y), "-": int(x) - int(y),
                                            "*": int(x) * int(y)}[op]  # fmt: skip
    assert len(raw) == 1 << 14


def test_the_arms_can_move_into_the_math_domain(tmp_path):
    pytest.importorskip("torch")
    from annealmix.cli import main

    args = ["demo", "--quick", "--arms", "abrupt,replay", "--domains", "code,math",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    run = results["runs"][0]
    assert run["config"]["domains"] == ["code", "math"]
    assert set(run["samples"]) == {"code", "math"} and "eval_math" in run
    row = results["leaderboard"][0]
    assert "final_math" in row and "samples_math" in row
    table = (tmp_path / "leaderboard.md").read_text()
    assert "final math" in table and "samples code/math" in table
    replay = next(r for r in results["runs"] if r["arm"] == "replay")
    assert replay["weight_code"][-1] == pytest.approx(0.05)  # keeps 5% of the first domain
