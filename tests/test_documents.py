"""Document sources: Megatron pairs, flat token files split at EOS, HF input_ids, lists."""

import numpy as np
import pytest
from test_sources import write_llmc, write_megatron

from annealmix.documents import (
    Documents,
    documents_from_arrays,
    documents_from_hf,
    documents_of,
    open_documents,
)
from annealmix.files import Mapped

DOCS = [[5, 6, 7, 0], [8, 0], [9, 10, 11, 12, 0], [13, 14]]  # 0 is the EOS; the last lacks one


def as_lists(docs: Documents) -> list[list[int]]:
    return [docs.document(i).tolist() for i in range(len(docs))]


def test_flat_files_split_after_every_eos(tmp_path):
    flat = np.concatenate(DOCS)
    flat.astype(np.uint16).tofile(tmp_path / "t.bin")
    np.save(tmp_path / "t.npy", flat.astype(np.uint32))
    write_llmc(tmp_path / "t.llmc", flat)
    for path, fmt in (("t.bin", "nanogpt"), ("t.npy", "npy"), ("t.llmc", "llmc")):
        docs = open_documents(str(tmp_path / path), fmt, eos_id=0)
        assert as_lists(docs) == DOCS, fmt
        assert docs.lengths().tolist() == [4, 2, 5, 2] and docs.num_tokens == 13
        assert docs.max_length() == 5


def test_megatron_pairs_give_one_document_per_sequence(tmp_path):
    write_megatron(tmp_path / "a", DOCS[:2])
    write_megatron(tmp_path / "b", DOCS[2:], dtype=np.int32, code=4)
    docs = open_documents([str(tmp_path / "a.bin"), str(tmp_path / "b.idx")], "megatron")
    assert len(docs) == 4 and as_lists(docs) == DOCS
    # the index stays on disk: its byte pointers are read as token starts on demand
    assert all(isinstance(p[1].pointers, Mapped) for p in docs.parts)
    # pieces across both files, back to back, in one call
    got = docs.gather(
        np.array([3, 0, 2, 1, 2]), np.array([1, 2, 0, 0, 4]), np.array([1, 2, 3, 2, 1])
    )
    assert got.tolist() == [14, 7, 0, 9, 10, 11, 8, 0, 0]


def test_megatron_cores_own_builder(tmp_path):
    torch = pytest.importorskip("torch")
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    prefix = str(tmp_path / "web_text_document")
    builder = indexed.IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for doc in DOCS:
        builder.add_item(torch.tensor(doc))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    docs = open_documents(prefix, "megatron")
    assert as_lists(docs) == DOCS
    theirs = indexed.IndexedDataset(prefix)
    assert [theirs[i].tolist() for i in range(len(theirs))] == DOCS


def test_lists_and_hugging_face_input_ids():
    assert as_lists(documents_from_arrays([np.array(d) for d in DOCS])) == DOCS
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"input_ids": DOCS, "text": list("abcd")})
    assert as_lists(documents_from_hf(ds)) == DOCS
    # behind an indices mapping (select, shuffle), document i is still row i
    picked = ds.select([2, 0])
    assert as_lists(documents_of(picked)) == [DOCS[2], DOCS[0]]
    # a slice of the Arrow table: offsets into the unsliced values
    assert as_lists(documents_from_hf(ds.select(range(1, 3)).flatten_indices())) == DOCS[1:3]


def test_errors_name_the_field_and_the_fix(tmp_path):
    np.arange(1, 50, dtype=np.uint16).tofile(tmp_path / "t.bin")
    with pytest.raises(ValueError, match="give eos_id"):
        open_documents(str(tmp_path / "t.bin"), "nanogpt")
    with pytest.raises(ValueError, match="eos_id = 70000 lies outside the vocabulary"):
        open_documents(str(tmp_path / "t.bin"), "nanogpt", eos_id=70000)
    with pytest.raises(ValueError, match=r"eos_id = 60 lies outside .*vocab_size = 50"):
        open_documents(str(tmp_path / "t.bin"), "nanogpt", eos_id=60, vocab_size=50)
    with pytest.raises(ValueError, match="eos_id must be"):
        open_documents(str(tmp_path / "t.bin"), "nanogpt", eos_id=-1)
    with pytest.raises(ValueError, match="holds no documents"):
        documents_from_arrays([])
    datasets = pytest.importorskip("datasets")
    with pytest.raises(ValueError, match="no 'input_ids' column"):
        documents_from_hf(datasets.Dataset.from_dict({"text": ["a"]}))
    with pytest.raises(TypeError, match="cannot read documents from int"):
        documents_of(3)


def test_a_subset_of_documents_spans_files_without_copying(tmp_path):
    write_megatron(tmp_path / "a", DOCS[:2])
    write_megatron(tmp_path / "b", DOCS[2:])
    docs = open_documents([str(tmp_path / "a"), str(tmp_path / "b")], "megatron")
    middle = docs.subset(1, 3)
    assert as_lists(middle) == DOCS[1:3] and middle.num_tokens == 7
    tokens = middle.parts[0][0]  # the same file's tokens, read on use: nothing copied
    assert isinstance(tokens, Mapped) and tokens.path == docs.parts[0][0].path
    with pytest.raises(ValueError, match=r"documents \[3, 3\) are not a non-empty range"):
        docs.subset(3, 3)
