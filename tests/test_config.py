"""Config files: the file as data, its errors, the writer, the budget."""

import time
from pathlib import Path

import numpy as np
import pytest

from annealmix.cli import main
from annealmix.config import MixConfig, SourceSpec, load_config
from annealmix.opened import budget

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


def token_files(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir(exist_ok=True)
    for i, n in enumerate((401, 201)):
        np.arange(n, dtype=np.uint16).tofile(folder / f"part{i}.bin")
    return folder


TOKENS = """
global_batch_size = 4
num_steps = 30
order = "replacement"
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


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.mixture.sources == ("web", "code", "math") and config.num_steps == 100_000


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
            "has 'format' but no path to read",
        ),
        (TINY.replace("size = 50", "size = 50\neos_id = 2"), "has 'eos_id' but no path to read"),
        (TINY.replace("size = 50", "size = 50\npack = 1"), "sources.a pack must be true or false"),
        (TINY.replace("seed = 1", 'seed = 1\nunit = "bytes"'), "unknown unit 'bytes'"),
        (
            TINY.replace("seed = 1", 'seed = 1\nunit = "tokens"'),
            'unit = "tokens" but sources.a has no seq_len',
        ),
        (
            TINY.replace("seed = 1", 'seed = 1\nunit = "tokens"')
            .replace("size = 50", "size = 50\nseq_len = 8\npack = false")
            .replace("size = 7", "size = 7\nseq_len = 8"),
            "sources.a is unpacked (pack = false) and has no path: token weights over documents",
        ),
        (
            TINY.replace("seed = 1", 'seed = 1\nunit = "tokens"')
            .replace("size = 50", "size = 50\nseq_len = 8")
            .replace("size = 7", "size = 7\nseq_len = 16"),
            'unit = "tokens" needs one seq_len for every source (a batch is one tensor), got '
            "{'a': 8, 'b': 16}",
        ),
        (TINY.replace("size = 50", 'size = 50\npath = "x.bin"'), "has both 'path' and 'size'"),
        (TINY.replace("size = 50", "size = 50\nmax_epochs = 0"), "max_epochs must be > 0"),
        (
            TINY.replace("seed = 1", "seed = 1\nreplacement = true"),
            "'replacement' is gone: give the default order instead, order = \"replacement\"",
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
        (TINY.replace("weight = 3", "weight = true"), "weight for source 'a' must be a number"),
        (
            TINY.replace("size = 50", 'path = 5\nformat = "nanogpt"\nseq_len = 4'),
            "sources.a path must be a file, a glob or a list of them (strings), got 5",
        ),
        (
            TINY.replace("end_step = 30", "end_step = 45"),
            "phases[0] ends at step 45, after the run's last step 39 (num_steps = 40)",
        ),
        (TINY.replace("seed = 1", "seed = 1\norder = 'shufle'"), "did you mean 'shuffle'?"),
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
        plans = [c.open(check_budget=False).plan for c in (again, first)]
        assert plans[0].fingerprint == plans[1].fingerprint
        assert again.sources == first.sources and again.num_steps == first.num_steps
        assert dump_config(again) == dump_config(first)


def test_relative_paths_are_read_from_the_config_folder(tmp_path, monkeypatch):
    token_files(tmp_path)
    path = write(tmp_path, TOKENS.replace("PATH", "shards"))
    monkeypatch.chdir("/")
    opened = load_config(path).open()
    assert len(opened.sources["web"]) == 75
    assert "books" not in opened.sources  # planned by its size


def test_a_folder_is_not_a_config(tmp_path, capsys):
    assert main(["preview", str(tmp_path)]) == 2
    assert "is a folder; give the TOML file inside it" in capsys.readouterr().err


def test_the_config_is_the_file_and_the_plan_follows_it():
    specs = (SourceSpec(name="a", weight=0.5, size=10), SourceSpec(name="b", weight=0.5, size=10))
    config = MixConfig(global_batch_size=10, num_steps=5, sources=specs, order="replacement")
    plan = config.open(check_budget=False).plan
    assert plan.mixture.weights == {"a": 0.5, "b": 0.5}
    assert plan.orders == ("replacement", "replacement") and plan.sizes == (10, 10)
    with pytest.raises(AttributeError):
        config.plan = None  # the config holds what the file says, nothing derived


def test_loading_opens_nothing_and_opening_names_every_missing_path(tmp_path, capsys):
    text = TOKENS.replace("PATH", "nowhere") + (
        '[sources.more]\nweight = 1\npath = ["gone.bin", "gone/*.bin"]\nformat = "megatron"\n'
        "seq_len = 8\n"
    )
    config = load_config(write(tmp_path, text))  # no file is looked at
    assert [s.name for s in config.sources] == ["web", "books", "more"]
    with pytest.raises(FileNotFoundError) as err:
        config.open()
    message = str(err.value)
    assert message.startswith("4 file(s) the config names are missing: ")
    for missing in ("sources.web: ", "nowhere/", "(no file matches)", "sources.more: ",
                    "gone.bin", "gone.idx", "gone/*.bin (no file matches)"):  # fmt: skip
        assert missing in message, missing
    assert main(["preview", str(tmp_path / "mix.toml")]) == 2
    assert "file(s) the config names are missing" in capsys.readouterr().err


def test_opening_sources_enforces_max_epochs(tmp_path):
    token_files(tmp_path)
    text = TOKENS.replace("PATH", "shards").replace(
        'format = "nanogpt"', 'format = "nanogpt"\nmax_epochs = 0.5'
    )
    config = load_config(write(tmp_path, text))
    with pytest.raises(ValueError, match="source 'web' cannot supply its share"):
        config.open()


def test_a_huge_run_is_budgeted_from_its_schedule_without_a_replay(tmp_path, capsys):
    text = EXAMPLE.read_text().replace("num_steps = 100_000", "num_steps = 1_000_000_000_000")
    text = text.replace("80_000", "800_000_000_000").replace("99_999", "999_999_999_999")
    text = text.replace("max_epochs = 2", "")
    config = load_config(write(tmp_path, text)).open(check_budget=False)
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="is read"):
        spent = budget(config)
    assert time.perf_counter() - start < 30
    total = sum(row["samples"] for row in spent.values())
    assert total == pytest.approx(1024 * 10**12, rel=1e-9)
    assert not spent["web"]["exact"]
    small = load_config(EXAMPLE).open(check_budget=False)
    with pytest.warns(UserWarning, match="source 'math' is read 12.8 times"):
        exact = budget(small)
    assert exact["web"]["exact"] and sum(r["samples"] for r in exact.values()) == 1024 * 100_000
