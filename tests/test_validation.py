"""Per-source validation in a plain torch loop: each source's held-out samples, tagged."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from annealmix import Mixture, Plan, TokenWindows  # noqa: E402
from annealmix.documents import documents_from_arrays  # noqa: E402
from annealmix.packing import Packed  # noqa: E402
from annealmix.torch import SourceLosses  # noqa: E402
from annealmix.torch.validation import validation_loader  # noqa: E402

PLAN = Plan(Mixture(weights={"code": 1.0, "prose": 1.0, "math": 1.0}), global_batch_size=8)


def held_out():
    rng = np.random.default_rng(0)
    code = TokenWindows(np.arange(1000, 1000 + 23 * 4 + 1), 4)  # 23 windows of ids 1000+
    prose = Packed(documents_from_arrays([rng.integers(1, 99, int(n)) for n in
                                          rng.integers(2, 30, 40)]), 4, name="prose")  # fmt: skip
    return {"code": code, "prose": prose}


@pytest.mark.parametrize("workers", [0, 2])
def test_every_held_out_sample_once_with_its_source_and_exact_means(workers):
    sources = held_out()
    seen, losses = [], SourceLosses(PLAN.mixture.sources)
    for batch in validation_loader(sources, PLAN, batch_size=5, num_workers=workers):
        assert batch["sample"].shape[1:] == (5,) and batch["source"].dtype == torch.int64
        seen += list(zip(batch["source"].tolist(), batch["index"].tolist()))
        losses.add(batch["sample"].double(), batch["source"])  # a stand-in loss: the tokens
    assert seen == [(0, i) for i in range(23)] + [(1, i) for i in range(len(sources["prose"]))]
    means = losses.reduce()
    code = np.stack([sources["code"][i] for i in range(23)])
    prose = sources["prose"].read(np.zeros(len(sources["prose"]), int),
                                  np.arange(len(sources["prose"])))  # fmt: skip
    assert means == pytest.approx({"code": code.mean(), "prose": prose.mean()}, rel=1e-12)
    assert "math" not in means  # no held-out set: no entry


def test_a_cap_per_source_and_shards_split_the_batches():
    sources = held_out()
    capped = [b["source"].tolist() for b in validation_loader(sources, PLAN, batch_size=4,
                                                              per_source=6)]  # fmt: skip
    assert sum(capped, []) == [0] * 6 + [1] * 6
    halves = []
    for rank in (0, 1):
        loader = validation_loader(sources, PLAN, batch_size=4, shard=(rank, 2))
        for b in loader:
            halves += list(zip(b["source"].tolist(), b["index"].tolist()))
    everything = [(0, i) for i in range(23)] + [(1, i) for i in range(len(sources["prose"]))]
    assert sorted(halves) == everything


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"sources": {"poetry": [1]}}, r"unknown source in sources: 'poetry'"),
        ({"sources": {}}, "sources is empty"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"shard": (2, 2)}, "shard rank 2 must be below its world size 2"),
    ],
)
def test_bad_validation_loaders_say_what(kw, message):
    args = {"sources": held_out(), "batch_size": 4} | kw
    with pytest.raises(ValueError, match=message):
        validation_loader(args.pop("sources"), PLAN, **args)
