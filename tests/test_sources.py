from pathlib import Path

import numpy as np
import pytest

from annealmix import TokenWindows


def test_token_windows_cut_samples_of_seq_len_plus_one():
    w = TokenWindows(np.arange(10, dtype=np.uint16), seq_len=3)
    assert len(w) == 3
    assert w[1].tolist() == [3, 4, 5, 6] and w[1].dtype == np.int64
    with pytest.raises(IndexError, match="sample 3 is out of range for 3 samples"):
        w[3]
    with pytest.raises(ValueError, match="fewer than one sample of seq_len \\+ 1 = 11"):
        TokenWindows(np.arange(5), seq_len=10)
    with pytest.raises(ValueError, match="1-D integer array"):
        TokenWindows(np.zeros(10), seq_len=2)


from annealmix.files import Mapped  # noqa: E402
from annealmix.sources import (  # noqa: E402
    MegatronIndexed,
    TokenShards,
    open_token_source,
    read_llmc,
    read_nanogpt,
    read_npy,
)


def write_llmc(path, tokens, magic=20240520, version=1, dtype=np.uint16, count=None):
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=dtype).tobytes())


def write_megatron(prefix, docs, dtype=np.uint16, code=8):
    """The MMIDIDX pair as Megatron-LM's preprocessing writes it (one sequence per doc)."""
    lengths = np.array([len(d) for d in docs], dtype="<i4")
    pointers = (
        np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype("<i8") * np.dtype(dtype).itemsize
    )
    with open(f"{prefix}.bin", "wb") as f:
        for d in docs:
            f.write(np.asarray(d, dtype=dtype).tobytes())
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write((1).to_bytes(8, "little"))
        f.write(bytes([code]))
        f.write(len(docs).to_bytes(8, "little"))
        f.write((len(docs) + 1).to_bytes(8, "little"))
        f.write(lengths.tobytes())
        f.write(pointers.tobytes())
        f.write(np.arange(len(docs) + 1, dtype="<i8").tobytes())


def test_nanogpt_files_in_both_widths(tmp_path):
    for dtype in ("uint16", "uint32"):
        path = tmp_path / f"t.{dtype}.bin"
        np.arange(100, dtype=dtype).tofile(path)
        tokens = read_nanogpt(path, dtype)
        assert isinstance(tokens, Mapped) and tokens.dtype == dtype and tokens[99] == 99
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="7 bytes is not a whole number of uint16 tokens"):
        read_nanogpt(odd)


def test_llmc_files_gpt2_and_llama3(tmp_path):
    write_llmc(tmp_path / "a.bin", range(50))
    assert read_llmc(tmp_path / "a.bin").tolist() == list(range(50))
    write_llmc(tmp_path / "b.bin", [70000, 1], magic=20240801, version=7, dtype=np.uint32)
    assert read_llmc(tmp_path / "b.bin").tolist() == [70000, 1]
    write_llmc(tmp_path / "c.bin", range(50), count=60)
    with pytest.raises(ValueError, match="header says 60 tokens .* truncated or corrupt"):
        read_llmc(tmp_path / "c.bin")
    write_llmc(tmp_path / "d.bin", range(5), magic=1234)
    with pytest.raises(ValueError, match="not an llm.c token file \\(magic 1234"):
        read_llmc(tmp_path / "d.bin")


def test_npy_files(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(20, dtype=np.int32))
    assert read_npy(tmp_path / "a.npy")[19] == 19
    np.save(tmp_path / "b.npy", np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="expected a 1-D integer array"):
        read_npy(tmp_path / "b.npy")


def test_megatron_indexed_pair(tmp_path):
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    write_megatron(tmp_path / "web_text_document", docs)
    ds = MegatronIndexed(tmp_path / "web_text_document.bin")
    assert len(ds) == 3 and ds.dtype == np.uint16
    assert ds.tokens.tolist() == [t for d in docs for t in d]
    with open(tmp_path / "web_text_document.bin", "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError, match="disagree: the index counts 18 bytes .* has 20"):
        MegatronIndexed(tmp_path / "web_text_document")
    (tmp_path / "bad.idx").write_bytes(b"NOTMEGA" + bytes(40))
    (tmp_path / "bad.bin").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="not a Megatron index"):
        MegatronIndexed(tmp_path / "bad")


def test_shards_blend_by_size_and_name_token_ranges(tmp_path):
    np.arange(0, 41, dtype=np.uint16).tofile(tmp_path / "s0.bin")  # 10 samples of 4 + 1
    np.arange(100, 121, dtype=np.uint16).tofile(tmp_path / "s1.bin")  # 5 samples
    source = open_token_source(str(tmp_path / "s*.bin"), "nanogpt", seq_len=4)
    assert isinstance(source, TokenShards) and len(source) == 15
    assert source[10].tolist() == [100, 101, 102, 103, 104]
    assert source.token_range(11) == (str(tmp_path / "s1.bin"), 4, 9)
    with pytest.raises(FileNotFoundError, match="s2.bin' does not exist \\(a missing shard\\?\\)"):
        open_token_source([str(tmp_path / "s0.bin"), str(tmp_path / "s2.bin")], "nanogpt", 4)
    with pytest.raises(FileNotFoundError, match="no files match"):
        open_token_source(str(tmp_path / "x*.bin"), "nanogpt", 4)
    with pytest.raises(ValueError, match="unknown format 'nanogtp' \\(did you mean 'nanogpt'"):
        open_token_source(str(tmp_path / "s0.bin"), "nanogtp", 4)
    np.arange(3, dtype=np.uint16).tofile(tmp_path / "tiny.bin")
    with pytest.raises(ValueError, match="tiny.bin: tokens holds 3 tokens"):
        open_token_source(str(tmp_path / "tiny.bin"), "nanogpt", 4)


def test_any_sequence_or_torch_dataset_is_a_source():
    torch = pytest.importorskip("torch")
    from annealmix import Mixture, Plan
    from annealmix.torch import MixtureDataLoader

    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.tensor([i * i])

    sources = {"list": list(range(100, 120)), "torch": Squares()}
    plan = Plan(
        Mixture(weights={"list": 1, "torch": 1}),
        global_batch_size=4,
        sizes={"list": 20, "torch": 10},
    )
    as_tensor = lambda sample, k: torch.as_tensor(sample).reshape(1)  # noqa: E731
    batches = list(MixtureDataLoader(sources, plan, num_steps=5, transform=as_tensor))
    assert len(batches) == 5 and all(len(b["source"]) == 4 for b in batches)
    for b in batches:
        for k, i, x in zip(b["source"].tolist(), b["index"].tolist(), b["sample"][:, 0].tolist()):
            assert x == (100 + i if k == 0 else i * i)


def _corrupt_index(prefix, field, value):
    """Rewrite one entry of a Megatron index: lengths, pointers or the document index."""
    idx = np.fromfile(f"{prefix}.idx", dtype=np.uint8)
    count = int.from_bytes(idx[18:26].tobytes(), "little")
    offsets = {"lengths": (34, "<i4"), "pointers": (34 + 4 * count, "<i8"),
               "documents": (34 + 12 * count, "<i8")}  # fmt: skip
    at, dtype = offsets[field]
    idx[at : at + np.dtype(dtype).itemsize] = np.frombuffer(
        np.array([value], dtype=dtype).tobytes(), np.uint8
    )
    idx.tofile(f"{prefix}.idx")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lengths", -2, "sequence 0 has a negative length -2"),
        ("pointers", 10**6, "sequence 0 spans bytes \\[1000000, 1000006\\) but the .bin has 18"),
        ("pointers", 3, "sequence 0 starts at byte 3, not a whole number of 2-byte tokens"),
        ("documents", 2, "document index must rise from 0 to the sequence count 3"),
    ],
)
def test_a_corrupt_megatron_index_is_refused(tmp_path, field, value, message):
    write_megatron(tmp_path / "d", [[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    _corrupt_index(tmp_path / "d", field, value)
    with pytest.raises(ValueError, match=message):
        MegatronIndexed(tmp_path / "d")


def test_a_glob_over_a_megatron_pair_opens_it_once(tmp_path):
    write_megatron(tmp_path / "web", [list(range(20)), list(range(20, 41))])
    source = open_token_source(str(tmp_path / "web*"), "megatron", seq_len=4)
    assert len(source) == 10 and source.names == [str(tmp_path / "web")]


def test_files_opened_as_the_wrong_format_are_refused(tmp_path):
    write_llmc(tmp_path / "llmc.bin", range(1, 300))
    with pytest.raises(ValueError, match='starts with llm.c\'s header .* use format = "llmc"'):
        open_token_source(str(tmp_path / "llmc.bin"), "nanogpt", 8)
    write_megatron(tmp_path / "mega", [list(range(1, 50))])
    with pytest.raises(ValueError, match="Megatron index mega.idx lies beside it"):
        open_token_source(str(tmp_path / "mega.bin"), "nanogpt", 8)
    np.arange(1, 5000, dtype=np.uint32).tofile(tmp_path / "wide.bin")
    with pytest.raises(ValueError, match='uint32 tokens read as uint16 .* dtype = "uint32"'):
        open_token_source(str(tmp_path / "wide.bin"), "nanogpt", 8)
    assert len(open_token_source(str(tmp_path / "wide.bin"), "nanogpt", 8, "uint32")) == 624
    np.array([5, 70, 3, 0] * 100, dtype=np.uint16).tofile(tmp_path / "ids.bin")
    with pytest.raises(ValueError, match="holds token id 70, not below vocab_size = 64"):
        open_token_source(str(tmp_path / "ids.bin"), "nanogpt", 8, vocab_size=64)
    assert len(open_token_source(str(tmp_path / "ids.bin"), "nanogpt", 8, vocab_size=71)) == 49


def test_an_empty_token_file_is_named(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    for format in ("nanogpt", "llmc", "npy"):
        with pytest.raises(ValueError, match="empty.bin' is empty \\(0 bytes\\)"):
            open_token_source(str(tmp_path / "empty.bin"), format, 8)


def test_every_reader_is_a_source_and_anything_indexable_becomes_one(tmp_path):
    from annealmix.documents import documents_from_arrays
    from annealmix.packing import Packed, Padded
    from annealmix.sources import (
        Indexed,
        Source,
        as_source,
        batch_row,
        is_stream,
        read_one,
        tokens_of,
    )

    docs = documents_from_arrays([np.arange(1, 30), np.arange(40, 45), np.arange(50, 90)])
    flat = np.arange(200, dtype=np.uint16)
    flat.tofile(tmp_path / "a.bin")
    readers = {
        "windows": TokenWindows(flat, 8, name="a.bin"),
        "shards": open_token_source(str(tmp_path / "a.bin"), "nanogpt", 8),
        "packed": Packed(docs, 8, name="packed"),
        "padded": Padded(docs, 64, name="padded"),
    }
    def tokens(sample):
        return np.asarray(sample["tokens"] if isinstance(sample, dict) else sample)

    for name, reader in readers.items():
        assert isinstance(reader, Source) and as_source(reader) is reader, name
        assert not is_stream(reader) and reader.describe(), name
        got = reader.read(np.array([0, 1]), np.array([1, 0]))  # a batch: pass 0 and pass 1
        assert np.array_equal(tokens(batch_row(got, 1)), tokens(read_one(reader, 1, 0))), name
    assert readers["windows"].where(0, 3) == {"tokens": {"file": "a.bin", "start": 24, "end": 33}}
    assert readers["shards"].where(0, 3)["tokens"]["start"] == 24
    pieces = readers["packed"].where(0, 0)["documents"]  # window 0 of pass 0: 9 tokens
    assert sum(p["end"] - p["start"] for p in pieces) == 9
    assert {"document", "start", "end"} <= set(pieces[0])
    assert readers["padded"].where(2, 1) == {"documents": [{"document": 1}]}
    assert readers["windows"].sample_tokens() == 8 and readers["windows"].num_tokens == 200
    assert tokens_of(readers["padded"]).tolist() == [28, 4, 39]  # each document's targets
    assert tokens_of(readers["windows"]).tolist() == [8] * len(readers["windows"])
    wrapped = as_source([10, 11, 12], "plain")
    assert isinstance(wrapped, Indexed) and wrapped.read(np.zeros(2), np.array([2, 0])) == [12, 10]
    assert wrapped.sample_tokens() is None and wrapped.documents is None
    with pytest.raises(ValueError, match="tokens per sample are unknown"):
        tokens_of(wrapped)
    with pytest.raises(TypeError, match="source 'gen' is a stream"):
        as_source(iter([1, 2]), "gen")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_a_megatron_pair_holds_two_file_descriptors(tmp_path):
    from annealmix.files import MegatronIndexed

    for i in range(40):
        write_megatron(tmp_path / f"f{i}", [list(range(20)), list(range(7))])
    before = len(list(Path("/proc/self/fd").iterdir()))
    pairs = [MegatronIndexed(tmp_path / f"f{i}") for i in range(40)]
    held = len(list(Path("/proc/self/fd").iterdir())) - before
    assert held <= 2 * 40, held  # one map of the .idx (was three), one of the .bin
    assert pairs[7].lengths.tolist() == [20, 7] and pairs[7].documents.tolist() == [0, 1, 2]
