"""annealmix.hf: a mixture as one Hugging Face dataset, built from real `datasets` objects."""

import numpy as np
import pytest

hf = pytest.importorskip("datasets")

from annealmix import Mixture, Phase, Plan, Shard, Stream  # noqa: E402
from annealmix.hf import mix_datasets  # noqa: E402

SIZES = {"web": 50, "code": 13}


def table(name, n):
    return hf.Dataset.from_dict({"text": [f"{name} {i}" for i in range(n)], "id": list(range(n))})


def plan(batch=8):
    mix = Mixture(
        weights={"web": 0.8, "code": 0.2},
        phases=[Phase(start_step=2, end_step=12, weights={"code": 0.7, "web": 0.3})],
    )
    return Plan(mix, global_batch_size=batch, sizes=SIZES, seed=4)


def expected(p, steps, shard=None):
    """(source name, row id) of every row the stream yields, in order."""
    out = []
    for mb in Stream(p, shard, num_steps=steps):
        out += [(p.mixture.sources[k], int(i)) for k, i in zip(mb.sources, mb.indices)]
    return out


def rows(ds, names=("web", "code")):
    return [(names[r["source"]], r["id"]) for r in ds]


def test_map_style_sources_give_a_dataset_in_the_plans_order():
    p = plan()
    ds = mix_datasets({n: table(n, s) for n, s in SIZES.items()}, p, num_steps=15)
    assert isinstance(ds, hf.Dataset) and len(ds) == 15 * 8
    assert ds.features["source"].names == ["web", "code"]
    assert rows(ds) == expected(p, 15)
    assert all(r["text"] == f"{('web', 'code')[r['source']]} {r['id']}" for r in ds)
    assert rows(ds.to_iterable_dataset()) == expected(p, 15)  # what a Trainer should get


def test_each_ranks_rows_are_its_shard_and_together_every_batch():
    p = plan()
    sources = {n: table(n, s) for n, s in SIZES.items()}
    parts = []
    for rank in range(2):
        shard = Shard(global_batch_size=8, world_size=2, rank=rank, micro_batches=2)
        ds = mix_datasets(sources, p, num_steps=15, shard=shard)
        assert rows(ds) == expected(p, 15, shard)
        parts.append(np.array(rows(ds), dtype=object).reshape(15, 4, 2))
    whole = np.array(expected(p, 15), dtype=object).reshape(15, 8, 2)
    for step in range(15):
        both = sorted(map(tuple, np.concatenate([parts[0][step], parts[1][step]]).tolist()))
        assert both == sorted(map(tuple, whole[step].tolist()))


def stream_of(name, n):
    def gen():
        for i in range(n):
            yield {"text": f"{name} {i}", "id": i}

    return hf.IterableDataset.from_generator(gen)


@pytest.mark.parametrize("shard", [None, Shard(global_batch_size=8, world_size=2, rank=1,
                                                micro_batches=2)])  # fmt: skip
def test_a_stream_source_gives_an_iterable_dataset_read_in_order(shard):
    p = plan()
    ds = mix_datasets({"web": table("web", 50), "code": stream_of("code", 200)}, p,
                      num_steps=15, shard=shard)  # fmt: skip
    assert isinstance(ds, hf.IterableDataset)
    want = []
    for mb in Stream(p, shard, num_steps=15):
        for k, d, i in zip(mb.sources.tolist(), mb.draws.tolist(), mb.indices.tolist()):
            want.append(("web", i) if k == 0 else ("code", d))  # a stream's draw d: its row d
    assert rows(ds) == want
    assert rows(ds) == want  # a second pass starts over


def test_hugging_faces_own_state_dict_resumes_the_stream():
    p = plan()
    ds = mix_datasets({"web": stream_of("web", 500), "code": stream_of("code", 200)}, p,
                      num_steps=15)  # fmt: skip
    full = rows(ds)
    it = iter(ds)
    for _ in range(37):
        next(it)
    state = ds.state_dict()
    again = mix_datasets({"web": stream_of("web", 500), "code": stream_of("code", 200)}, p,
                         num_steps=15)  # fmt: skip
    again.load_state_dict(state)
    assert rows(again) == full[37:]


def test_bad_inputs_name_the_fix():
    p = plan()
    good = {n: table(n, s) for n, s in SIZES.items()}
    with pytest.raises(ValueError, match="source 'code' has 12 rows, the plan says 13"):
        mix_datasets({**good, "code": table("code", 12)}, p, num_steps=2)
    other = hf.Dataset.from_dict({"text": ["x"] * 13, "label": [0] * 13})
    with pytest.raises(ValueError, match=r"differ in \['id', 'label'\]"):
        mix_datasets({**good, "code": other}, p, num_steps=2)
    with pytest.raises(ValueError, match="already has a column 'id'"):
        mix_datasets(good, p, num_steps=2, source_column="id")
    with pytest.raises(ValueError, match="no entry for source 'code'"):
        mix_datasets({"web": good["web"]}, p, num_steps=2)
    short = mix_datasets({"web": good["web"], "code": stream_of("code", 3)}, p, num_steps=15)
    with pytest.raises(ValueError, match="stream source .code. ended after 3 rows"):
        list(short)
    with pytest.raises(ValueError, match="needs the plan's sizes"):
        mix_datasets(good, Plan(p.mixture, global_batch_size=8), num_steps=2)


def test_the_example_follows_its_anneal():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "hf_mix.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, timeout=300).stdout  # fmt: skip
    assert "12,800 rows, columns ['text', 'source']" in out
    assert "mix_datasets 1.2% std (9.4% to 12.5%)" in out  # 3 or 4 of every 32 rows
    for line in out.splitlines():
        if line.startswith("steps"):
            got, want = (float(x.split("%")[0]) for x in line.split("prose")[1].split("scheduled"))
            assert abs(got - want) < 0.15  # each 50-step window's share is its schedule's
