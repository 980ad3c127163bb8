import json
from pathlib import Path

import numpy as np
import pytest

from annealmix.cli import main
from annealmix.config import load_config

EXAMPLE = Path(__file__).parent.parent / "examples" / "mix.toml"

TINY = """
seed = 1
global_batch_size = 8
num_steps = 40
[sources.a]
weight = 3
size = 50
[sources.b]
weight = 1
size = 7
order = "sequential"
[[phases]]
start_step = 10
end_step = 30
schedule = { name = "sigmoid", steepness = 8 }
weights = { b = 1 }
"""


def write(tmp_path, text):
    path = tmp_path / "mix.toml"
    path.write_text(text)
    return path


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


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.plan.mixture.sources == ("web", "code", "math") and config.num_steps == 100_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            TINY.replace("seed = 1", "sead = 1"),
            "unknown key in the config: 'sead' (did you mean 'seed'?)",
        ),
        (
            TINY.replace("order =", "ordr ="),
            "unknown key in sources.b: 'ordr' (did you mean 'order'?)",
        ),
        (
            TINY.replace("weight = 3", "weight = -3"),
            "initial weight for source 'a' must be finite and >= 0, got -3",
        ),
        (TINY.replace("global_batch_size = 8", ""), "lacks 'global_batch_size'"),
        (TINY.replace("size = 50", ""), "sources.a lacks 'size' or 'path'"),
        (
            TINY.replace("size = 50", "size = 50\nformat = 'npy'"),
            "has a format or dtype but no path",
        ),
        (TINY.replace("size = 50", 'size = 50\npath = "x.bin"'), "has both 'path' and 'size'"),
        (TINY.replace("size = 50", "size = 50\nmax_epochs = 0"), "max_epochs must be > 0"),
        (
            TINY.replace("seed = 1", "seed = 1\nreplacement = 1"),
            "replacement must be true or false",
        ),
        (
            TINY.replace("size = 7", "size = 7\nmax_epochs = 2"),
            "source 'b' cannot supply its share",
        ),
        (
            TINY.replace("weights = { b = 1 }", "weights = { c = 1 }"),
            "unknown source in phases[0]: 'c'",
        ),
        ("seed = [", "is not valid TOML"),
    ],
)
def test_bad_configs_exit_2_and_say_why(tmp_path, capsys, text, message):
    assert main(["preview", str(write(tmp_path, text))]) == 2
    assert message in capsys.readouterr().err


def test_missing_file(capsys):
    assert main(["preview", "nope.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_config_round_trips_through_the_writer(tmp_path):
    from annealmix.config import dump_config, save_config

    for text in (TINY, EXAMPLE.read_text(), TOKENS):
        first = load_config(write(tmp_path, text.replace("PATH", str(token_files(tmp_path)))))
        save_config(first, tmp_path / "again.toml")
        again = load_config(tmp_path / "again.toml")
        assert again.plan.fingerprint == first.plan.fingerprint
        assert again.sources == first.sources and again.num_steps == first.num_steps
        assert dump_config(again) == dump_config(first)


def token_files(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir(exist_ok=True)
    for i, n in enumerate((401, 201)):
        np.arange(n, dtype=np.uint16).tofile(folder / f"part{i}.bin")
    return folder


TOKENS = """
global_batch_size = 4
num_steps = 30
replacement = true
[sources.web]
weight = 1
path = "PATH/part*.bin"
format = "nanogpt"
seq_len = 8
[sources.books]
weight = 1
size = 1000
seq_len = 8
order = "sequential"
"""


def test_token_sources_size_the_plan_and_inspect_names_token_ranges(tmp_path, capsys):
    path = write(tmp_path, TOKENS.replace("PATH", str(token_files(tmp_path))))
    config = load_config(path)
    assert config.plan.sizes == (50 + 25, 1000)  # 400 // 8 + 200 // 8 windows
    assert config.plan.orders == ("replacement", "sequential")
    assert main(["inspect", str(path), "--steps", "3:5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in report["steps"]] == [3, 4]
    batch = config.plan.batches(3, 2)
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
    assert "rank 1 of 2: positions 4..7" in out
    batch = load_config(path).plan.batch(12)
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [int(r[1]) for r in rows] == [4, 5, 6, 7]
    assert [int(r[4]) for r in rows] == batch.indices[0, 4:].tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give one of --step N or --steps A:B"),
        (["--step", "1", "--steps", "1:2"], "give one of --step N or --steps A:B"),
        (["--steps", "5"], "--steps must be A:B"),
        (["--steps", "5:5"], "needs 0 <= A < B"),
        (["--step", "1", "--world-size", "3"], "does not divide into world_size 3"),
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


def test_relative_paths_are_read_from_the_config_folder(tmp_path, monkeypatch):
    token_files(tmp_path)
    path = write(tmp_path, TOKENS.replace("PATH", "shards"))
    monkeypatch.chdir("/")
    config = load_config(path)
    assert len(config.open_source("web")) == 75
    with pytest.raises(ValueError, match="source 'books' has no path"):
        config.open_source("books")


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
