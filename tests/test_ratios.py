"""Lists written to a few decimals keep their corpora's ratios (``annealmix.ratios``),
and a plan counts each such corpus as one unit."""

import numpy as np
import pytest

from annealmix import Mixture, Phase
from annealmix._counting.grouped import units
from annealmix.blends import list_files
from annealmix.ratios import half_unit, kept_ratios


@pytest.mark.parametrize(
    ("text", "half"),
    [("0.25", 0.005), ("0.0019365418", 0.5e-10), ("3", 0.5), ("1e-5", 0.5e-5),
     ("1.50E-3", 0.5e-5), ("0", 0.0), ("0.000", 0.0)],  # fmt: skip
)
def test_half_a_unit_in_the_last_written_place(text, half):
    assert half_unit(text) == pytest.approx(half)


def write_lists(tmp_path, rng, decimals=9, nudge=None):
    """Two lists over three corpora of random file sizes, each corpus's share spread
    over its files by size (as ALCF writes them), to ``decimals`` places."""
    corpora = {"web": 8, "code": 5, "math": 3}
    shares = [{"web": 0.6, "code": 0.3, "math": 0.1}, {"web": 0.2, "code": 0.5, "math": 0.3}]
    size = {(c, i): rng.lognormal(0, 1) for c, n in corpora.items() for i in range(n)}
    paths = []
    for j, share in enumerate(shares):
        lines = []
        for c, n in corpora.items():
            total = sum(size[c, i] for i in range(n))
            for i in range(n):
                w = share[c] * size[c, i] / total
                if nudge == (j, c, i):
                    w *= 1.001  # a file the second list weighs in another ratio
                lines.append(f"{w:.{decimals}f} {tmp_path}/{c}-{i} {c}")
                for ext in (".bin", ".idx"):
                    (tmp_path / f"{c}-{i}{ext}").touch()
        paths.append(tmp_path / f"list{j}.txt")
        paths[-1].write_text("\n".join(lines) + "\n")
    return paths


def unit_count(weights, corpora) -> int:
    mix = Mixture(weights=weights[0], phases=[Phase(start_step=0, end_step=9, weights=weights[1])])
    ids = {n: k for k, n in enumerate(mix.sources)}
    return len(units(mix, tuple(tuple(ids[n] for n in ns) for ns in corpora.values()))[0])


@pytest.mark.parametrize("seed", range(20))
def test_lists_written_to_nine_decimals_count_each_corpus_as_one_unit(tmp_path, seed):
    paths = write_lists(tmp_path, np.random.default_rng(seed))
    weights, _, corpora = list_files(paths)
    assert unit_count(weights, corpora) == 3
    for path, got in zip(paths, weights):
        for line in path.read_text().split("\n")[:-1]:
            text, prefix, corpus = line.split()
            name = f"{corpus}/{prefix.rsplit('/', 1)[1]}"
            assert abs(got[name] - float(text)) <= half_unit(text) * (1 + 1e-6)  # what it says


def test_ratios_that_differ_past_the_written_precision_are_left_as_written(tmp_path):
    paths = write_lists(tmp_path, np.random.default_rng(0), nudge=(1, "code", 2))
    weights, _, corpora = list_files(paths)
    assert unit_count(weights, corpora) == 3 - 1 + 5  # code: every file its own unit
    for line in paths[1].read_text().split("\n")[:-1]:
        text, prefix, corpus = line.split()
        if corpus == "code":
            assert weights[1][f"code/{prefix.rsplit('/', 1)[1]}"] == float(text)


def test_a_file_one_list_leaves_out_keeps_the_corpus_apart():
    mixes = [{"a": 0.25, "b": 0.25}, {"a": 0.5}]
    halves = [{"a": 0.005, "b": 0.005}, {"a": 0.05}]
    assert kept_ratios(mixes, halves, {"a": "c", "b": "c"}) == mixes
    # 0.33 and 0.67, then 0.2 and 0.4 (one decimal): 0.198 and 0.402 are inside it
    got = kept_ratios([{"a": 0.33, "b": 0.67}, {"a": 0.2, "b": 0.4}],
                      [{"a": 0.005, "b": 0.005}, {"a": 0.05, "b": 0.05}],
                      {"a": "c", "b": "c"})  # fmt: skip
    assert got[0] == {"a": 0.33, "b": 0.67}
    assert got[1] == pytest.approx({"a": 0.198, "b": 0.402})  # the total as written, 0.6
    # 0.30 and 0.70, then 0.21 and 0.39: no ratio inside the first's intervals has a
    # multiple inside the second's (0.205 / 0.305 > 0.395 / 0.695): left as written
    apart = [{"a": 0.3, "b": 0.7}, {"a": 0.21, "b": 0.39}]
    assert kept_ratios(apart, [{"a": 0.005, "b": 0.005}, {"a": 0.005, "b": 0.005}],
                       {"a": "c", "b": "c"}) == apart  # fmt: skip


def test_shapes_equal_up_to_float_rounding_are_one_unit():
    # proportional columns whose ratios differ in the last bits (0.1 + 0.2 != 0.3)
    mix = Mixture(weights={"a": 0.1 + 0.2, "b": 0.3, "c": 0.4},
                  phases=[Phase(start_step=0, end_step=9, weights={"a": 0.6, "b": 0.6, "c": 0.1})])
    assert units(mix, ((0, 1), (2,)))[0] == [[0, 1], [2]]
