import json
from pathlib import Path

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
    assert sum(report["samples"].values()) == 8 * 40
    assert report["epochs"]["b"] == pytest.approx(report["samples"]["b"] / 7)


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
        (TINY.replace("size = 50", ""), "sources.a lacks 'size'"),
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
