"""Data-file-lists in a config: the cooldown in one run, from a TOML file."""

import json

import numpy as np
import pytest
from test_sources import write_megatron

from annealmix import Mixture, Phase, Plan
from annealmix.blends import read_file_lists
from annealmix.cli import main
from annealmix.config import dump_config, load_config

CONFIG = """
global_batch_size = 40
num_steps = 60

[lists]
paths = ["pretrain.txt", "cooldown.txt"]
seq_len = 8

[[phases]]
start_step = 30
end_step = 59
schedule = "cosine"
list = "cooldown.txt"
"""


def lists(tmp_path):
    rng = np.random.default_rng(0)
    files = {"web": 4, "code": 3, "math": 2}
    for corpus, count in files.items():
        for i in range(count):
            docs = [rng.integers(1, 900, int(n)).tolist() for n in rng.integers(5, 60, 60)]
            write_megatron(tmp_path / f"{corpus}-{i}_text_document", docs)
    pretrain = [f"{0.7 / 4} web-{i}_text_document web" for i in range(4)]
    pretrain += [f"{0.3 / 3} code-{i}_text_document code" for i in range(3)]
    cooldown = [f"{0.2 / 4} web-{i}_text_document web" for i in range(4)]
    cooldown += [f"{0.4 / 3} code-{i}_text_document code" for i in range(3)]
    cooldown += [f"{0.2} math-{i}_text_document math" for i in range(2)]
    (tmp_path / "pretrain.txt").write_text("\n".join(pretrain) + "\n")
    (tmp_path / "cooldown.txt").write_text("\n".join(cooldown) + "\n")
    (tmp_path / "mix.toml").write_text(CONFIG)
    return tmp_path / "mix.toml"


def test_a_config_of_two_lists_is_the_plan_read_file_lists_gives(tmp_path, monkeypatch):
    config = load_config(lists(tmp_path))
    assert len(config.sources) == 9 and set(config.corpora) == {"web", "code", "math"}
    opened = config.open()
    monkeypatch.chdir(tmp_path)  # read_file_lists reads relative prefixes from here
    (start, target), sources, corpora = read_file_lists(["pretrain.txt", "cooldown.txt"], 8)
    mix = Mixture(weights=start, phases=[Phase(start_step=30, end_step=59, weights=target,
                                               schedule="cosine")])  # fmt: skip
    want = Plan(mix, global_batch_size=40, corpora=corpora,
                sizes={n: len(s) for n, s in sources.items()})  # fmt: skip
    assert opened.plan.mixture.sources == want.mixture.sources
    assert np.array_equal(opened.plan.counts(0, 60), want.counts(0, 60))
    assert opened.plan.fingerprint == want.fingerprint
    # the sources' windows too: the same names, seeds and files
    name = "math/math-1_text_document"
    assert np.array_equal(opened.sources[name].read([2], [3]), sources[name].read([2], [3]))
    # written back without the lists: the same plan
    (tmp_path / "dumped.toml").write_text(dump_config(config))
    again = load_config(tmp_path / "dumped.toml").open().plan
    assert again.fingerprint == want.fingerprint


def test_preview_and_plot_show_the_corpora(tmp_path, capsys):
    path = lists(tmp_path)
    assert main(["preview", str(path)]) == 0
    out = capsys.readouterr().out
    assert "9 sources in 3 corpora" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("step"))
    assert header.split() == ["step", "web", "code", "math"]
    assert main(["preview", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["corpora"]["math"] == ["math/math-0_text_document", "math/math-1_text_document"]
    pytest.importorskip("matplotlib")
    assert main(["plot", str(path), "-o", str(tmp_path / "mix.png")]) == 0
    assert (tmp_path / "mix.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + '\n[sources.web]\nweight = 1.0\nsize = 10\n',
         r"both \[lists\] and \[sources\]"),
        (lambda t: t.replace('list = "cooldown.txt"', 'list = "other.txt"'),
         r"unknown phases\[0\] list 'other.txt'; valid: cooldown.txt, pretrain.txt"),
        (lambda t: t.replace('list = "cooldown.txt"', 'list = "cooldown.txt"\nweights = {}'),
         r"phases\[0\] has both 'list' and 'weights'"),
        (lambda t: t.replace("seq_len = 8\n", ""), r"lists lacks 'seq_len'"),
        (lambda t: t.replace('paths = ["pretrain.txt", "cooldown.txt"]', 'paths = "a.txt"'),
         "lists paths must be a non-empty list"),
        (lambda t: t.replace("seq_len = 8", "seq_len = 8\nsplit = 1"), "key in lists:"),
        (lambda t: t.replace('"cooldown.txt"]', '"missing.txt"]'),
         r"data file list .*missing.txt' does not exist"),
    ],
)  # fmt: skip
def test_bad_lists_in_a_config_say_what_and_how(tmp_path, edit, message):
    path = lists(tmp_path)
    path.write_text(edit(CONFIG))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_config(path)


def test_corpora_in_a_plain_config_are_checked(tmp_path):
    text = """global_batch_size = 8
num_steps = 10
[sources.a]
weight = 1.0
size = 100
[sources.b]
weight = 1.0
size = 100
[corpora]
x = ["a", "c"]
"""
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ValueError, match=r"unknown source in corpora\['x'\]: 'c'; valid: a, b"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "c.toml").write_text(text.replace('"c"', '"b"'))
    plan = load_config(tmp_path / "c.toml").open().plan
    assert dict(plan.corpora) == {"x": ("a", "b")}
