"""The Megatron data path: the global stream by global sample index."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from annealmix import Mixture, Phase, Plan, TokenWindows, indexed  # noqa: E402
from annealmix.shard import turn  # noqa: E402
from annealmix.torch.megatron import MegatronDataset  # noqa: E402

SEQ = 8
MIX = Mixture(
    weights={"web": 6, "code": 3, "math": 1},
    phases=[Phase(start_step=10, end_step=40, weights={"math": 1}, schedule="cosine")],
)


def sources() -> dict:
    # Source k's tokens start at k * 100_000, so a window names its source and place.
    return {
        name: TokenWindows(np.arange(k * 100_000, k * 100_000 + n * SEQ + 1), SEQ)
        for k, (name, n) in enumerate((("web", 400), ("code", 120), ("math", 70)))
    }


def plan() -> Plan:
    return Plan(MIX, global_batch_size=32, seed=4, sizes={k: len(v) for k, v in sources().items()})


def test_global_index_i_is_position_i_mod_b_of_step_i_div_b_turned():
    p, ds = plan(), MegatronDataset(sources(), plan(), num_steps=50)
    assert len(ds) == 50 * 32
    ref = indexed(p, p.batches(0, 50))
    for i in range(len(ds)):
        step, j = divmod(i, 32)
        col = (j + int(turn(step, 32))) % 32
        assert ds.locate(i) == (
            int(ref.sources[step, col]),
            int(ref.indices[step, col]),
            int(ref.draws[step, col]) // p.sizes[int(ref.sources[step, col])],
        )
    for step in (0, 17, 49):  # each step's samples are the plan's, whatever the turn
        got = sorted(ds.locate(step * 32 + j)[:2] for j in range(32))
        assert got == sorted(zip(ref.sources[step].tolist(), ref.indices[step].tolist()))


def test_samples_are_megatrons_dict():
    ds = MegatronDataset(sources(), plan(), num_steps=5)
    sample = ds[37]
    source, index, _ = ds.locate(37)
    first = source * 100_000 + index * SEQ
    assert sample["tokens"].tolist() == list(range(first, first + SEQ))
    assert sample["labels"].tolist() == list(range(first + 1, first + SEQ + 1))
    assert sample["loss_mask"].dtype == torch.float32 and sample["loss_mask"].sum() == SEQ
    assert sample["position_ids"].tolist() == list(range(SEQ))
    assert sample["tokens"].dtype == torch.int64


def test_any_order_of_reads_and_workers_give_the_same_samples():
    ds = MegatronDataset(sources(), plan(), num_steps=300)
    forward = [ds.locate(i) for i in range(0, len(ds), 7)]
    backward = [MegatronDataset(sources(), plan(), num_steps=300).locate(i)
                for i in reversed(range(0, len(ds), 7))]  # fmt: skip
    assert forward == backward[::-1]
    # Megatron's sampler hands out batches of global indices; workers get a pickled copy.
    batches = [list(range(a, a + 16)) for a in range(4000, 4800, 16)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=2)
    got = torch.cat([b["tokens"][:, 0] for b in loader]).tolist()
    want = [ds[i]["tokens"][0].item() for batch in batches for i in batch]
    assert got == want


def test_contiguous_rank_slices_meet_the_whole_mix():
    # Megatron gives data-parallel rank r the r-th contiguous slice of every step.
    names = ("a", "b", "c")
    srcs = {n: TokenWindows(np.arange(10_000 * SEQ + 1), SEQ) for n in names}
    p = Plan(Mixture(weights={"a": 0.6, "b": 0.3, "c": 0.1}), global_batch_size=64,
             sizes=dict.fromkeys(names, 10_000))  # fmt: skip
    ds = MegatronDataset(srcs, p, num_steps=800)
    for rank in range(8):  # 8 ranks of 8 samples
        ids = [ds.locate(s * 64 + rank * 8 + j)[0] for s in range(800) for j in range(8)]
        share = np.bincount(ids, minlength=3) / len(ids)
        assert np.abs(share - [0.6, 0.3, 0.1]).max() < 0.02, (rank, share)


def test_sources_of_other_lengths_and_indices_out_of_range_are_refused():
    srcs = dict(sources(), math=TokenWindows(np.arange(1000), SEQ * 2))
    with pytest.raises(ValueError, match="samples of \\[9, 17\\] tokens"):
        MegatronDataset(srcs, Plan(MIX, global_batch_size=32, sizes={k: len(v) for k, v in
                                   srcs.items()}), num_steps=3)  # fmt: skip
    ds = MegatronDataset(sources(), plan(), num_steps=3)
    with pytest.raises(IndexError, match="global sample 96 is out of range for 96 samples"):
        ds[96]


def test_the_megatron_loop_example_resumes_from_consumed_samples(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("megatron.core")
    script = Path(__file__).resolve().parent.parent / "examples" / "megatron_loop.py"
    command = [sys.executable, str(script), "--data", str(tmp_path), "--steps", "80"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "2,560 samples read by 2 data-parallel ranks" in out
    assert "consumed_samples = 1,280: identical" in out
    shares = [float(x.split("prose")[1].split("%")[0]) for x in out.splitlines() if "prose" in x]
    assert shares[0] == 10.0 and shares[-1] == 80.0 and shares == sorted(shares)


def test_the_alcf_cooldown_example_anneals_one_list_into_the_other(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("megatron.core")
    pytest.importorskip("matplotlib")
    script = Path(__file__).resolve().parent.parent / "examples" / "alcf_cooldown.py"
    command = [sys.executable, str(script), "--data", str(tmp_path / "data"), "--steps", "200",
               "--out", str(tmp_path / "out")]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300,
                         cwd=tmp_path).stdout  # fmt: skip
    assert "27 files in 6 corpora from two lists" in out and "not writable" not in out
    table = [r.split() for r in out.splitlines() if r[:1].isdigit() and "/" in r]
    rows = {int(r[0]): r[2:] for r in table}  # step, lr, a scheduled/realized pair a corpus
    math = [float(rows[s][-1].split("/")[0]) for s in sorted(rows)]
    web = [float(rows[s][0].split("/")[0]) for s in sorted(rows)]
    assert math[0] == math[2] == 0.0 and math[-1] == 0.2  # the cooldown list's corpus enters
    assert web[0] == web[2] == 0.55 and web[-1] == 0.15  # ... during the decay only
    assert (tmp_path / "out" / "corpus_shares.png").stat().st_size > 10_000


def test_the_text_item_is_what_megatron_deepspeeds_get_batch_reads():
    # argonne-lcf's Megatron-DeepSpeed: tokens_ = data["text"]; tokens, labels =
    # tokens_[:, :-1], tokens_[:, 1:]; the masks from its own flags
    ds = MegatronDataset(sources(), plan(), num_steps=5)
    text = MegatronDataset(sources(), plan(), num_steps=5, item="text")
    for i in (0, 37, 159):
        item = text[i]
        assert list(item) == ["text"] and item["text"].shape == (SEQ + 1,)
        assert torch.equal(item["text"][:-1], ds[i]["tokens"])
        assert torch.equal(item["text"][1:], ds[i]["labels"])
    with pytest.raises(ValueError, match='item = "text" hands Megatron-DeepSpeed the tokens'):
        MegatronDataset(sources(), plan(), num_steps=5, item="text", eod_mask_loss=True)
    with pytest.raises(ValueError, match="unknown item .json.; valid: dict, text"):
        MegatronDataset(sources(), plan(), num_steps=5, item="json")


@pytest.mark.parametrize("item", ["dict", "text"])
def test_source_ids_follow_each_sample_through_packing(item):
    # Per-domain validation after packing: each item names the source it came from.
    from annealmix.documents import documents_from_arrays
    from annealmix.packing import Packed

    rng = np.random.default_rng(5)
    packed = {name: Packed(documents_from_arrays([np.full(int(n), 1000 * k + 1) for n in
                                                  rng.integers(1, 30, 80)]),
                           SEQ, name=name, output="dict")
              for k, name in enumerate(MIX.sources)}  # fmt: skip
    p = Plan(MIX, global_batch_size=32, seed=4, sizes={k: len(v) for k, v in packed.items()})
    ds = MegatronDataset(packed, p, num_steps=20, item=item, source_ids=True)
    key = "tokens" if item == "dict" else "text"
    batch = ds.__getitems__(list(range(0, 640, 7)))
    for i, got in zip(range(0, 640, 7), batch):
        k = ds.locate(i)[0]
        assert got["source"].item() == k == ds[i]["source"].item()
        assert set((got[key] - 1).div(1000, rounding_mode="floor").tolist()) == {k}
    assert "source" not in MegatronDataset(packed, p, num_steps=20, item=item)[0]


@pytest.mark.parametrize("item", ["dict", "text"])
def test_a_micro_batch_read_at_once_is_its_samples_read_one_by_one(item):
    # DataLoader hands Megatron's batch sampler's indices to __getitems__ at once:
    # packed sources of one shape are read in one pass there.
    from annealmix.documents import documents_from_arrays
    from annealmix.packing import Packed

    rng = np.random.default_rng(3)
    flags = {} if item == "text" else {"reset_position_ids": True, "eod_mask_loss": True}
    packed = {
        name: Packed(documents_from_arrays([rng.integers(0, 900, int(n)) for n in
                                            rng.integers(1, 40, docs)]),
                     SEQ, name=name, output="dict", **flags)
        for name, docs in (("web", 300), ("code", 90), ("math", 12))
    }  # fmt: skip
    p = Plan(MIX, global_batch_size=32, seed=4, sizes={k: len(v) for k, v in packed.items()})
    ds = MegatronDataset(packed, p, num_steps=60, item=item)
    indices = [int(i) for i in rng.integers(0, len(ds), 200)]
    together = ds.__getitems__(indices)
    for i, got in zip(indices, together):
        alone = ds[i]
        assert got.keys() == alone.keys()
        assert all(torch.equal(got[k], alone[k]) for k in alone)
