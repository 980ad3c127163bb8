"""Packing: per-epoch document shuffles, windows by random access, the sample dict."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annealmix import Mixture, Plan, Shard, Stream
from annealmix.documents import documents_from_arrays
from annealmix.packing import _BLOCK, _EPOCHS_KEPT, Packed, PackedStream, Padded, cu_seqlens
from annealmix.sources import read_one


def numbered(lengths, eos=None):
    """Documents whose tokens are their global positions (1, 2, ...), so every token is
    distinct and names its place; with ``eos``, each document's last token is it."""
    docs, at = [], 1
    for n in lengths:
        doc = np.arange(at, at + n)
        if eos is not None:
            doc[-1] = eos
        docs.append(doc)
        at += n
    return docs


def endless(p: Packed, epochs: int) -> np.ndarray:
    """The input tokens of every window covering the first ``epochs`` epochs, in order."""
    n = -(-epochs * p.num_tokens // p.seq_len)
    return p.windows(np.arange(n))[:, :-1].ravel()


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 90), min_size=1, max_size=300),
    seq_len=st.integers(1, 64),
    seed=st.integers(0, 3),
)
def test_every_token_is_an_input_once_per_epoch_and_epochs_reshuffle(lengths, seed, seq_len):
    docs = numbered(lengths)
    total = sum(lengths)
    if total < seq_len + 1:
        return
    p = Packed(docs, seq_len, seed=seed)
    stream = endless(p, 3)
    firsts = []
    for e in range(3):
        epoch = stream[e * total : (e + 1) * total]
        assert np.array_equal(np.sort(epoch), np.arange(1, total + 1))
        # the epoch is its documents whole, back to back, in some order
        starts = np.flatnonzero(np.isin(epoch, [d[0] for d in docs]))
        firsts.append(epoch[starts].tolist())
        pieces = np.split(epoch, starts[1:])
        assert sorted(x.tolist() for x in pieces) == sorted(d.tolist() for d in docs)
    if len(lengths) >= 8:  # 8! orders: two epochs in the same order would be a bug
        assert firsts[0] != firsts[1] or firsts[1] != firsts[2]
    # consecutive windows share one token: each window's last target is the next's input
    w = p.windows(np.arange(10))
    assert np.array_equal(w[:-1, -1], w[1:, 0])


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=400),
    seq_len=st.integers(1, 200),
    picks=st.lists(st.integers(0, 10**4), min_size=1, max_size=20),
)
def test_random_access_reads_what_a_walk_reads(lengths, seq_len, picks):
    if sum(lengths) < seq_len + 1:
        return
    p = Packed(numbered(lengths), seq_len, seed=1, output="dict", eod_mask_loss=True)
    batch = p.windows(np.array(picks))
    fresh = Packed(numbered(lengths), seq_len, seed=1, output="dict", eod_mask_loss=True)
    for j, w in enumerate(picks):
        one = fresh.window(w)
        for key in one:
            assert np.array_equal(batch[key][j], one[key]), key


def test_the_sample_dict_restarts_positions_and_masks_document_ends():
    eos = 0
    docs = numbered([3, 7, 2, 20, 5], eos=eos)
    p = Packed(docs, 12, output="dict", eod_mask_loss=True, reset_position_ids=True, seed=2)
    for w in range(8):
        s = p.window(w)
        tokens, labels = s["tokens"], s["labels"]
        assert np.array_equal(tokens[1:], labels[:-1])
        # Megatron's --eod-mask-loss: no loss where the input is the end-of-document token
        assert np.array_equal(s["loss_mask"] == 0, tokens == eos)
        # positions count from each document's first token (or the window's start)
        starts = np.concatenate([[True], tokens[:-1] == eos])
        assert np.array_equal(s["position_ids"] == 0, starts)
        assert np.array_equal(np.diff(s["document_ids"]) == 1, starts[1:])
        assert s["position_ids"].dtype == np.int64 and s["loss_mask"].dtype == np.float32
    plain = Packed(docs, 12, output="dict")  # Megatron's defaults: every switch off
    assert plain.window(3)["position_ids"].tolist() == list(range(12))
    assert plain.window(3)["loss_mask"].all() and "attention_mask" not in plain.window(3)
    with pytest.raises(ValueError, match=r'eod_mask_loss shape Megatron\'s sample dict, and '
                       r'output = "tokens" gives token windows; give output = "dict"'):  # fmt: skip
        Packed(docs, 12, eod_mask_loss=True)
    with pytest.raises(TypeError, match="reset_position_ids must be true or false, got 'yes'"):
        Packed(docs, 12, output="dict", reset_position_ids="yes")


def test_cu_seqlens_for_varlen_attention():
    ids = np.array([[0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1]])
    assert cu_seqlens(ids).tolist() == [0, 2, 5, 6, 7, 12]
    assert cu_seqlens(ids[0]).tolist() == [0, 2, 5, 6]


def test_memory_does_not_grow_with_epochs():
    p = Packed(numbered([5] * 1000), 16)
    for e in range(12):
        p.read(np.array([e] * 3), np.array([0, len(p) // 2, len(p) - 1]))
    assert len(p._tables) == _EPOCHS_KEPT
    table = next(iter(p._tables.values()))
    assert table.nbytes == 8 * (-(-1000 // _BLOCK) + 1)  # 8 bytes per 64 documents


def test_windows_of_one_epoch_read_by_the_plan_cover_the_source():
    """A plan's draws of epoch e reach the source as read(e, i): every window of
    the block once, whatever the order."""
    p = Packed(numbered([7, 30, 2, 11, 50, 9]), 10)
    k = len(p)
    for e in (0, 3):
        got = p.read(np.full(k, e), np.random.default_rng(e).permutation(k))
        assert np.array_equal(
            np.sort(got[:, 0]), np.sort(p.windows(np.arange(e * k, e * k + k))[:, 0])
        )


def test_resume_mid_epoch_on_another_world_size_reads_the_same_windows():
    docs = {"short": numbered([3, 9, 4] * 40), "long": numbered([200, 700, 90] * 4)}
    packed = {n: Packed(d, 32, name=n) for n, d in docs.items()}
    plan = Plan(Mixture(weights={"short": 1, "long": 3}), global_batch_size=8,
                sizes={n: len(p) for n, p in packed.items()})  # fmt: skip

    def read(batch):
        return [read_one(packed[n], d // len(packed[n]), i).tolist()
                for n, d, i in zip(np.array(plan.mixture.sources)[batch.sources.ravel()],
                                   batch.draws.ravel(), batch.indices.ravel())]  # fmt: skip

    whole = read(Stream(plan).take(60))  # 60 steps: several epochs of "short"
    first = Stream(plan, Shard(rank=0, world_size=2, global_batch_size=8))
    first.take(25)
    state = first.state_dict()
    tail = []
    for rank in range(4):
        s = Stream(plan, Shard(rank=rank, world_size=4, global_batch_size=8))
        s.load_state_dict(state)
        tail.append(read(s.take(35)))
    rows = [whole[25 * 8 + t * 8 : 25 * 8 + t * 8 + 8] for t in range(35)]
    got = [sum((tail[r][t * 2 : t * 2 + 2] for r in range(4)), []) for t in range(35)]
    assert [sorted(g) for g in got] == [sorted(r) for r in rows]


def test_padded_masks_padding_and_refuses_documents_too_long():
    docs = [[4, 5, 6], [7, 8, 9, 10, 11, 12]]
    p = Padded(docs, 5, pad_id=99)
    s = p[0]
    assert s["tokens"].tolist() == [4, 5, 6, 99, 99] and s["labels"].tolist() == [5, 6, 99, 99, 99]
    assert s["loss_mask"].tolist() == [1, 1, 0, 0, 0]
    assert p[1]["loss_mask"].tolist() == [1] * 5 and len(p) == 2
    with pytest.raises(ValueError, match=r"document 1 holds 6 tokens, more than seq_len \+ 1 = 5"):
        Padded(docs, 4)
    assert Padded(docs, 4, truncate=True)[1]["tokens"].tolist() == [7, 8, 9, 10]


def test_a_stream_of_documents_packs_in_arrival_order():
    docs = numbered([3, 9, 4, 12, 1, 6])
    windows = list(PackedStream(iter(docs), 5))
    flat = np.concatenate(docs)
    assert [w.tolist() for w in windows] == [flat[i * 5 : i * 5 + 6].tolist() for i in range(6)]
    rows = [{"input_ids": d.tolist()} for d in docs]
    assert [w.tolist() for w in PackedStream(rows, 5)] == [w.tolist() for w in windows]


def test_errors():
    with pytest.raises(ValueError, match="fewer than one window of seq_len \\+ 1 = 11"):
        Packed([[1, 2, 3]], 10)
    with pytest.raises(ValueError, match="unknown output 'tensor'"):
        Packed([[1] * 40], 10, output="tensor")
    p = Packed([[1] * 40], 10)
    with pytest.raises(IndexError, match="window 4 of epoch 0 is out of range"):
        read_one(p, 0, 4)
    with pytest.raises(ValueError, match="windows must be >= 0"):
        p.windows(np.array([-1]))
    assert documents_from_arrays([[1] * 40]).num_tokens == 40


def test_a_config_of_document_sources(tmp_path, capsys):
    from test_sources import write_megatron

    from annealmix.cli import main
    from annealmix.config import load_config
    from annealmix.opened import budget

    write_megatron(tmp_path / "web", numbered([30, 80, 12, 200] * 10))
    flat = np.concatenate(numbered([5, 40, 9] * 30, eos=0)).astype(np.uint16)
    flat.tofile(tmp_path / "code.bin")
    (tmp_path / "mix.toml").write_text(
        """
global_batch_size = 8
num_steps = 50
[sources.web]
weight = 1
path = "web.bin"
format = "megatron"
seq_len = 16
[sources.code]
weight = 1
path = "code.bin"
format = "nanogpt"
eos_id = 0
seq_len = 16
[[phases]]
start_step = 10
end_step = 40
weights = { code = 1 }
"""
    )
    config = load_config(tmp_path / "mix.toml")
    assert config.weight_unit == "tokens"
    opened = config.open()
    web, code = opened.sources["web"], opened.sources["code"]
    assert (web.num_tokens, len(web.documents), len(web)) == (3220, 40, 3220 // 16)
    assert (code.num_tokens, len(code.documents)) == (1620, 90)
    assert all(isinstance(s, Packed) for s in opened.sources.values())
    spent = budget(opened)
    for name, source in opened.sources.items():
        row = spent[name]
        assert row["tokens"] == row["samples"] * 16
        assert row["epochs"] == pytest.approx(row["tokens"] / source.num_tokens)
        assert row["documents"] == pytest.approx(row["epochs"] * len(source.documents))
    assert main(["preview", str(tmp_path / "mix.toml")]) == 0
    out = capsys.readouterr().out
    assert "documents" in out and f"{spent['web']['tokens']:,.0f}" in out
    assert "weights in tokens" in out
    assert main(["inspect", str(tmp_path / "mix.toml"), "--step", "3"]) == 0
    assert "doc " in capsys.readouterr().out
    # unpacked: one padded document per sample, which needs the sample dict
    text = (tmp_path / "mix.toml").read_text().replace("eos_id = 0", "eos_id = 0\npack = false")
    (tmp_path / "mix.toml").write_text(text)
    assert main(["preview", str(tmp_path / "mix.toml")]) == 2
    assert 'give output = "dict"' in capsys.readouterr().err
    (tmp_path / "mix.toml").write_text('output = "dict"\n' + text)
    assert main(["preview", str(tmp_path / "mix.toml")]) == 2
    assert "document 1 holds 40 tokens, more than seq_len + 1 = 17" in capsys.readouterr().err
    text = text.replace("pack = false", "pack = false\ntruncate = true")
    (tmp_path / "mix.toml").write_text('output = "dict"\n' + text)
    config = load_config(tmp_path / "mix.toml")
    opened = config.open()
    assert config.weight_unit == "samples" and isinstance(opened.sources["code"], Padded)
    assert budget(opened)["code"]["tokens"] is None


def test_the_loader_reads_packed_windows_by_epoch_and_resumes():
    torch = pytest.importorskip("torch")
    from annealmix.torch import MixtureDataLoader

    packed = {
        "short": Packed(numbered([3, 9, 4] * 20), 16, name="short", output="dict"),
        "long": Packed(numbered([200, 700, 90] * 2), 16, name="long", output="dict"),
    }
    plan = Plan(Mixture(weights={"short": 1, "long": 1}), global_batch_size=8,
                sizes={n: len(p) for n, p in packed.items()})  # fmt: skip
    shard = Shard(rank=0, world_size=1, global_batch_size=8)

    def loader():
        return MixtureDataLoader(packed, plan, shard, num_steps=40, num_workers=2)

    batches = list(loader())
    assert batches[0]["sample"]["tokens"].shape == (8, 16)
    assert batches[0]["sample"]["loss_mask"].dtype == torch.float32
    # each window is what the source gives for that draw's epoch and index
    ref = Stream(plan, shard, num_steps=40).take(40)
    names = plan.mixture.sources
    for step in (0, 13, 39):  # 39: "short" is in its 4th epoch
        for j in range(8):
            k, d, i = (int(x[step, j]) for x in (ref.sources, ref.draws, ref.indices))
            want = read_one(packed[names[k]], d // plan.sizes[k], i)["tokens"]
            assert batches[step]["sample"]["tokens"][j].tolist() == want.tolist()
    first = loader()
    it = iter(first)
    for _ in range(17):
        next(it)
    state = first.state_dict()
    m = first.metrics(16)  # packed windows count their tokens without being told
    for name in packed:
        assert m[f"mix/tokens/{name}"] == m[f"mix/samples/{name}"] * 16 > 0
    again = loader()
    again.load_state_dict(state)
    rest = list(again)
    for a, b in zip(rest, batches[17:], strict=True):
        assert torch.equal(a["sample"]["tokens"], b["sample"]["tokens"])


def test_token_weights_over_documents_of_very_different_lengths():
    """50/50 over 104- and 1017-token documents: by samples of whole documents that
    was a 9%/91% token split; packed, every step's cumulative tokens per source are
    within one window of the linear token anneal's target."""
    torch = pytest.importorskip("torch")
    from annealmix import Phase
    from annealmix.torch.megatron import MegatronDataset

    s, b, steps = 64, 16, 60
    packed = {
        "short": Packed(numbered([104] * 50), s, name="short", output="dict"),
        "long": Packed(numbered([1017] * 8), s, name="long", output="dict"),
    }
    mix = Mixture(
        weights={"short": 0.5, "long": 0.5},
        phases=[Phase(start_step=10, end_step=49, weights={"short": 0.1, "long": 0.9})],
    )
    plan = Plan(mix, global_batch_size=b, sizes={n: len(p) for n, p in packed.items()})
    ds = MegatronDataset(packed, plan, num_steps=steps)
    tokens = np.zeros(2)
    target = np.zeros(2)
    for step in range(steps):
        for j in range(b):
            sample = ds[step * b + j]
            k = ds.locate(step * b + j)[0]
            tokens[k] += sample["labels"].numel()
        target += mix.weights_at(step) * b * s
        assert np.abs(tokens - target).max() <= s  # within one window, at every step
    assert sample["position_ids"].dtype == torch.int64


def test_a_hugging_face_stream_packs_the_same_in_every_worker():
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("torch")
    from annealmix.torch import MixtureDataLoader

    docs = numbered([3, 9, 4, 12, 1, 6] * 30)
    rows = datasets.Dataset.from_dict({"input_ids": [d.tolist() for d in docs]})
    stream = PackedStream(rows.to_iterable_dataset(num_shards=3), 8)
    flat = np.concatenate(docs)
    memory = Packed(docs, 8, name="mem")
    plan = Plan(Mixture(weights={"hf": 1, "mem": 1}), global_batch_size=4,
                sizes={"hf": 10**6, "mem": len(memory)}, order={"hf": "sequential"})  # fmt: skip
    shard = Shard(rank=0, world_size=1, global_batch_size=4)
    for workers in (0, 2):
        loader = MixtureDataLoader({"hf": stream, "mem": memory}, plan, shard, num_steps=12,
                                   num_workers=workers)  # fmt: skip
        seen = 0
        for batch in loader:
            for k, d, sample in zip(batch["source"], batch["index"], batch["sample"]):
                if k == 0:  # draw d of the stream is its window d
                    d = int(d)
                    assert sample.tolist() == flat[d * 8 : d * 8 + 9].tolist()
                    seen += 1
        assert seen == 24


SWITCHES = [dict(zip(("reset_position_ids", "reset_attention_mask", "eod_mask_loss"), bits))
            for bits in itertools.product([False, True], repeat=3)]  # fmt: skip


@pytest.mark.parametrize("switches", SWITCHES)
def test_the_sample_dict_is_what_megatron_computes_from_the_same_tokens(switches):
    """Megatron-core's own mask and position builder, on each packed window's tokens
    (documents ending in EOD, as its preprocessing writes them), agrees with the
    dict, window by window, for every setting of its three switches; and so does
    MegatronDataset over windows of tokens, from the EOD id as Megatron finds them."""
    torch = pytest.importorskip("torch")
    gpt = pytest.importorskip("megatron.core.datasets.gpt_dataset")
    from annealmix import TokenWindows
    from annealmix.torch.megatron import MegatronDataset

    eod, seq_len = 0, 24
    docs = numbered([5, 31, 2, 64, 9, 17] * 6, eos=eod)
    p = Packed(docs, seq_len, output="dict", **switches)
    batch = p.windows(np.arange(3 * len(p)))  # three epochs
    flat = np.concatenate(docs)
    windows = TokenWindows(flat, seq_len)
    plan = Plan(Mixture(weights={"w": 1.0}), global_batch_size=4, sizes={"w": len(windows)})
    ds = MegatronDataset({"w": windows}, plan, num_steps=8, eod_token=eod, **switches)
    samples = [(batch["tokens"][j], {k: v[j] for k, v in batch.items()})
               for j in range(len(batch["tokens"]))]  # fmt: skip
    samples += [(ds[i]["tokens"].numpy(), {k: v.numpy() for k, v in ds[i].items()})
                for i in range(len(ds))]  # fmt: skip
    for tokens, sample in samples:
        mask, loss_mask, position_ids = gpt._get_ltor_masks_and_position_ids(
            torch.from_numpy(tokens), eod, create_attention_mask=True, **switches
        )
        assert loss_mask.tolist() == sample["loss_mask"].tolist()
        assert position_ids.tolist() == sample["position_ids"].tolist()
        if switches["reset_attention_mask"]:
            assert mask.tolist() == sample["attention_mask"].tolist()
        else:  # Megatron's plain causal mask: the attention kernel's own
            assert "attention_mask" not in sample


def test_megatron_switches_given_twice_must_agree():
    from annealmix.torch.megatron import MegatronDataset

    p = Packed(numbered([40, 30]), 8, output="dict", eod_mask_loss=True, name="web")
    plan = Plan(Mixture(weights={"web": 1.0}), global_batch_size=2, sizes={"web": len(p)})
    agreeing = MegatronDataset({"web": p}, plan, num_steps=2, eod_mask_loss=True)
    source, index, epoch = agreeing.locate(0)
    assert agreeing[0]["loss_mask"].tolist() == p.read([epoch], [index])["loss_mask"][0].tolist()
    expected = r"web is a Packed source built with .*'eod_mask_loss': True.*not "
    with pytest.raises(ValueError, match=expected + r".*Packed\(\.\.\., eod_mask_loss=False\)"):
        MegatronDataset({"web": p}, plan, num_steps=2, eod_mask_loss=False)
    from annealmix import TokenWindows

    windows = {"web": TokenWindows(np.arange(100), 8)}
    plan = Plan(Mixture(weights={"web": 1.0}), global_batch_size=2, sizes={"web": 12})
    with pytest.raises(ValueError, match=r"\['eod_mask_loss'\] find documents by their end: give "
                       "eod_token"):  # fmt: skip
        MegatronDataset(windows, plan, num_steps=2, eod_mask_loss=True)



def test_documents_that_would_pass_for_data_are_refused(tmp_path):
    from annealmix.config import load_config

    with pytest.raises(ValueError, match="document 1 holds the token id -3; token ids are >= 0"):
        Packed([[1, 2, 3], [4, -3, 5]], 2)
    with pytest.raises(ValueError, match="document 1 is empty; one document per sample"):
        Padded([[1, 2, 3], [], [4, 5]], 4)
    (tmp_path / "mix.toml").write_text(
        'global_batch_size = 2\nnum_steps = 2\n[sources.a]\nweight = 1\npath = "a.bin"\n'
        'format = "nanogpt"\neos_id = 0\nseq_len = 8\ntruncate = true\n'
    )
    with pytest.raises(ValueError, match="sources.a has truncate = true but is packed"):
        load_config(tmp_path / "mix.toml")
