"""Packed windows of many sources read in one pass are each source's own windows."""

import hashlib

import numpy as np
import pytest
from test_sources import write_megatron

from annealmix.documents import Documents, documents_from_arrays, open_documents
from annealmix.packing import Packed
from annealmix.reading import read_grouped
from annealmix.sources import TokenWindows, batch_row

FLAGS = {"reset_position_ids": True, "reset_attention_mask": True, "eod_mask_loss": True}


def sources(tmp_path, rng, seq_len=16, **options):
    """Packed sources of every shape a list holds: one document, fewer documents than a
    block of the epoch table (64), several blocks, two files in one source, and
    Megatron pairs read through the pool of maps."""
    out = []
    for i, docs in enumerate((1, 3, 40, 64, 65, 300, 700)):
        lengths = rng.integers(1, 90, docs) if docs > 1 else [seq_len * 5]
        out.append(Packed([rng.integers(0, 1000, int(n)) for n in lengths], seq_len, seed=i,
                          name=f"mem{i}", **options))  # fmt: skip
    two = [documents_from_arrays([rng.integers(0, 1000, int(n)) for n in rng.integers(1, 60, m)])
           for m in (30, 90)]  # fmt: skip
    out.append(Packed(Documents([p.parts[0] for p in two]), seq_len, name="parts", **options))
    for i in range(4):
        prefix = tmp_path / f"pair{i}_text_document"
        write_megatron(prefix, [rng.integers(1, 1000, int(n)) for n in rng.integers(2, 80, 50)])
        docs = open_documents(str(prefix), "megatron", name=f"pair{i}")
        out.append(Packed(docs, seq_len, seed=7, name=f"pair{i}", **options))
    return out


def rows(srcs, rng, n=400):
    ids = rng.integers(0, len(srcs), n)
    epochs = rng.integers(0, 6, n)
    indices = np.array([rng.integers(0, len(srcs[k])) for k in ids.tolist()])
    return ids, epochs, indices


def assembled(parts, n):
    out = [None] * n
    for ks, at, got in parts:
        assert ks.size == at.size
        for j, row in enumerate(at.tolist()):
            out[row] = batch_row(got, j)
    return out


@pytest.mark.parametrize("options", [{}, {"output": "dict"}, {"output": "dict", **FLAGS}])
def test_many_sources_in_one_pass_read_what_each_reads_alone(tmp_path, options):
    rng = np.random.default_rng(0)
    srcs = sources(tmp_path, rng, **options)
    ids, epochs, indices = rows(srcs, rng)
    parts = read_grouped(srcs, ids, epochs, indices)
    assert len(parts) == 1  # one read for every source of one form
    got = assembled(parts, ids.size)
    for row, (k, e, i) in enumerate(zip(ids.tolist(), epochs.tolist(), indices.tolist())):
        alone = batch_row(srcs[k].read(np.array([e]), np.array([i])), 0)
        if isinstance(alone, dict):
            assert got[row].keys() == alone.keys()
            for key in alone:
                assert np.array_equal(got[row][key], alone[key]), (row, key)
        else:
            assert np.array_equal(got[row], alone), row


def test_sources_of_other_forms_are_read_apart_and_land_in_their_rows(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    srcs = sources(tmp_path / "a", rng, seq_len=16) + sources(tmp_path / "b", rng, seq_len=8)
    srcs.append(TokenWindows(np.arange(1000), 16, name="flat"))
    ids, epochs, indices = rows(srcs, rng, 300)
    parts = read_grouped(srcs, ids, epochs, indices)
    # two packed forms (seq_len 16 and 8), and the token windows on their own
    assert sorted(len(np.unique(ks)) > 1 for ks, _, _ in parts) == [False, True, True]
    got = assembled(parts, ids.size)
    for row, (k, e, i) in enumerate(zip(ids.tolist(), epochs.tolist(), indices.tolist())):
        assert np.array_equal(got[row], batch_row(srcs[k].read(np.array([e]), np.array([i])), 0))


def test_a_window_out_of_range_names_its_own_source(tmp_path):
    rng = np.random.default_rng(2)
    srcs = sources(tmp_path, rng)
    bad = len(srcs[5])
    with pytest.raises(IndexError, match=rf"mem5: window {bad} of epoch 2 is out of range"):
        read_grouped(srcs, np.array([0, 5, 3]), np.array([0, 2, 1]), np.array([0, bad, 1]))


def test_packed_windows_are_pinned():
    # Windows, and the sample dict with Megatron's switches, as they were before
    # windows of many sources were read in one pass: streams are users' data.
    rng = np.random.default_rng(7)
    docs = [rng.integers(0, 1000, int(n)) for n in rng.integers(1, 300, 500)]
    h = hashlib.sha256()
    for seq_len, flags in ((64, {}), (17, FLAGS)):
        for name in ("web", "code"):
            p = Packed(documents_from_arrays(docs), seq_len, seed=3, name=name,
                       output="dict" if flags else "tokens", **flags)  # fmt: skip
            ws = np.concatenate([np.arange(3 * len(p)), rng.integers(0, 50 * len(p), 500)])
            got = p.windows(ws)
            for v in got.values() if isinstance(got, dict) else [got]:
                h.update(np.ascontiguousarray(v).tobytes())
    assert h.hexdigest() == "78ea51c6f39586493aab71dbb4fd2df47c6357bfea5e7c9445dc2ddcbd460704"


def test_sources_named_alike_read_together_as_alone():
    # Two Packed sources left at the default name share a key; their sizes differ.
    rng = np.random.default_rng(4)
    srcs = [Packed([rng.integers(0, 99, int(n)) for n in rng.integers(1, 30, docs)], 8)
            for docs in (20, 50, 900)]  # fmt: skip
    ids, epochs, indices = rows(srcs, rng, 200)
    got = assembled(read_grouped(srcs, ids, epochs, indices), ids.size)
    for row, (k, e, i) in enumerate(zip(ids.tolist(), epochs.tolist(), indices.tolist())):
        assert np.array_equal(got[row], batch_row(srcs[k].read(np.array([e]), np.array([i])), 0))
