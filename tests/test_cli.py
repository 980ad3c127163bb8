import json

import numpy as np
import pytest
from test_config import EXAMPLE, TINY, TOKENS, token_files, write

from annealmix import Shard, indexed
from annealmix.cli import main
from annealmix.config import load_config


def test_preview_prints_tables(tmp_path, capsys):
    assert main(["preview", str(write(tmp_path, TINY))]) == 0
    out = capsys.readouterr().out
    assert "weights at milestones" in out and "smoothness" in out and "epochs" in out


def test_preview_json_budget_adds_up(tmp_path, capsys):
    assert main(["preview", str(write(tmp_path, TINY)), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spent = report["budget"]
    assert sum(s["samples"] for s in spent.values()) == 8 * 40
    assert spent["b"]["epochs"] == pytest.approx(spent["b"]["samples"] / 7)
    assert report["warnings"] and "source 'b' is read" in report["warnings"][0]


def test_token_sources_size_the_plan_and_inspect_names_token_ranges(tmp_path, capsys):
    path = write(tmp_path, TOKENS.replace("PATH", str(token_files(tmp_path))))
    plan = load_config(path).open().plan
    assert plan.sizes == (50 + 25, 1000)  # 400 // 8 + 200 // 8 windows
    assert plan.orders == ("replacement", "sequential")
    assert main(["inspect", str(path), "--steps", "3:5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in report["steps"]] == [3, 4]
    batch = indexed(plan, plan.batches(3, 2))
    for row, entry in enumerate(report["steps"]):
        assert [s["index"] for s in entry["samples"]] == batch.indices[row].tolist()
        for s in entry["samples"]:
            if s["source"] == "web":
                shard = 0 if s["index"] < 50 else 1
                local = s["index"] - 50 * shard
                assert s["tokens"] == {
                    "file": str(tmp_path / "shards" / f"part{shard}.bin"),
                    "start": local * 8,
                    "end": local * 8 + 9,
                }
            else:
                assert s["tokens"] == {
                    "file": None,
                    "start": s["index"] * 8,
                    "end": s["index"] * 8 + 9,
                }


def test_inspect_one_rank_in_text(tmp_path, capsys):
    path = write(tmp_path, TINY)
    assert main(["inspect", str(path), "--step", "12", "--rank", "1", "--world-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "rank 1 of 2: 4 positions of each global batch of 8 (a window that turns" in out
    plan = load_config(path).open().plan
    batch = indexed(plan, plan.batch(12))
    rows = [line.split() for line in out.splitlines()[2:]]
    mine = np.arange(8)[Shard(global_batch_size=8, rank=1, world_size=2).positions(0, 12)]
    assert [int(r[1]) for r in rows] == mine.tolist()
    assert [int(r[4]) for r in rows] == batch.indices[0, mine].tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give one of --step N or --steps A:B"),
        (["--step", "1", "--steps", "1:2"], "give one of --step N or --steps A:B"),
        (["--steps", "5"], "--steps must be A:B"),
        (["--steps", "5:5"], "needs 0 <= A < B"),
        (["--step", "1", "--world-size", "3"], "does not divide into world_size 3"),
        (["--step", "40"], "--step 40 is past the run's last step 39 (num_steps = 40)"),
        (["--steps", "30:41"], "--steps 30:41 runs past the run's last step 39 (num_steps = 40)"),
    ],
)
def test_inspect_errors(tmp_path, capsys, args, message):
    assert main(["inspect", str(write(tmp_path, TINY)), *args]) == 2
    assert message in capsys.readouterr().err


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "mix.png"
    assert main(["plot", str(write(tmp_path, TINY)), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_subcommand_has_help_that_states_units(capsys):
    for command, unit in (
        ("preview", "fractions"),
        ("inspect", "token"),
        ("plot", "steps"),
        ("demo", "nats"),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert unit in capsys.readouterr().out


def test_the_cli_needs_no_torch_for_planning_commands():
    import subprocess
    import sys

    code = (
        "import sys; from annealmix.cli import main; "
        f"main(['preview', {str(EXAMPLE)!r}]); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_progress_bar_appears_only_for_long_work(capsys):
    import time

    from annealmix._progress import Progress

    quick = Progress(10, "steps", delay=10.0)
    quick.update(5)
    quick.close()
    assert capsys.readouterr().err == ""
    slow = Progress(10, "steps", delay=0.0)
    time.sleep(0.01)
    slow.update(5)
    slow.close()
    err = capsys.readouterr().err
    assert "5/10 steps" in err and "10/10 steps" in err and err.endswith("\n")
    assert "\r" not in err and err.count("\n") == 2  # not a terminal: whole lines, no redraws


def test_preview_of_a_huge_run_answers_at_once(tmp_path, capsys):
    text = TINY.replace("num_steps = 40", "num_steps = 1_000_000_000_000").replace(
        "size = 7", "size = 7000"
    )
    text = text.replace("[sources.b]", "[sources.c]\nweight = 1\nsize = 9\n[sources.b]")
    assert main(["preview", str(write(tmp_path, text))]) == 0
    out = capsys.readouterr().out
    assert "scheduled targets" in out


def test_plot_of_a_huge_run_draws_the_schedule_without_a_replay(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    text = TINY.replace("num_steps = 40", "num_steps = 1_000_000_000_000")
    text = text.replace("[sources.b]", "[sources.c]\nweight = 1\nsize = 9\n[sources.b]")
    out = tmp_path / "huge.png"
    assert main(["plot", str(write(tmp_path, text)), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_shows_the_steps_of_an_online_run_from_its_log(tmp_path, capsys):
    from annealmix import Stream
    from annealmix.online import online

    path = write(tmp_path, TINY)
    config = load_config(path)
    stream = Stream(online(config.open().plan))
    stream.take(5)
    stream.commit(7, {"a": 0.0, "b": 1.0})
    stream.take(4)
    (tmp_path / "state.json").write_text(json.dumps(stream.state_dict()))
    assert main(["inspect", str(path), "--step", "8", "--json", "--log",
                 str(tmp_path / "state.json")]) == 0  # fmt: skip
    samples = json.loads(capsys.readouterr().out)["steps"][0]["samples"]
    assert {s["source"] for s in samples} == {"b"}  # the update took the whole batch
    want = Stream(stream.plan, num_steps=9, log=stream.log).take(9)
    assert [s["index"] for s in samples] == want.indices[8].tolist()
    (tmp_path / "bad.json").write_text(json.dumps({"step": 3}))
    assert main(["inspect", str(path), "--step", "8", "--log", str(tmp_path / "bad.json")]) == 2
    assert "no weight log in it" in capsys.readouterr().err
