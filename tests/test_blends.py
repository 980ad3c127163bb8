"""Megatron blend arguments read into sources and weights."""

import json

import numpy as np
import pytest
from test_sources import write_megatron

from annealmix import Mixture, Phase, Plan
from annealmix.blends import read_blend, read_blend_file, read_split_blends
from annealmix.packing import Packed


@pytest.fixture
def pairs(tmp_path):
    for name, n in (("web_text_document", 500), ("code_text_document", 200)):
        write_megatron(tmp_path / name, [list(range(n)), list(range(n, 2 * n + 1))])
    return tmp_path


def test_a_weighted_blend_names_sources_by_file(pairs):
    weights, sources = read_blend(
        "0.7 web_text_document 0.3 code_text_document", seq_len=10, base=pairs
    )
    assert weights == {"web_text_document": 0.7, "code_text_document": 0.3}
    assert len(sources["web_text_document"]) == (1001 - 1) // 10
    # documents packed in a keyed order, reshuffled each epoch (as Megatron's GPT dataset)
    assert sources["code_text_document"][0].tolist() in (list(range(11)), list(range(200, 211)))
    assert isinstance(sources["code_text_document"], Packed)


def test_prefixes_alone_are_weighted_by_size_as_megatron_does(pairs):
    weights, sources = read_blend(["web_text_document", "code_text_document"], 10, base=pairs)
    assert weights == {"web_text_document": 100.0, "code_text_document": 40.0}
    assert weights == {n: float(len(s)) for n, s in sources.items()}


def test_two_blends_become_one_anneal(pairs):
    old, sources = read_blend("0.9 web_text_document 0.1 code_text_document", 10, base=pairs)
    new, _ = read_blend("0.5 web_text_document 0.5 code_text_document", 10, base=pairs)
    mix = Mixture(weights=old, phases=[Phase(start_step=100, end_step=199, weights=new)])
    plan = Plan(mix, global_batch_size=8, sizes={n: len(s) for n, s in sources.items()})
    assert plan.mixture.weights_at(199).round(2).tolist() == [0.5, 0.5]


def test_blend_files_and_per_split_json(pairs, monkeypatch):
    monkeypatch.chdir(pairs)  # relative prefixes: from the working directory, as Megatron
    (pairs / "args.txt").write_text("0.6 web_text_document\n0.4 code_text_document\n")
    weights, _ = read_blend_file(pairs / "args.txt", 10)
    assert weights == {"web_text_document": 0.6, "code_text_document": 0.4}
    (pairs / "splits.json").write_text(
        json.dumps(
            {"train": ["1", "web_text_document"], "valid": ["code_text_document"], "test": []}
        )  # fmt: skip
    )
    splits = read_split_blends(pairs / "splits.json", 10)
    assert set(splits) == {"train", "valid"} and splits["valid"][0] == {"code_text_document": 40.0}


@pytest.mark.parametrize(
    ("blend", "error", "message"),
    [
        ("", ValueError, "the blend is empty"),
        ("0.5 web_text_document 0.5", ValueError, "alternates weight and prefix, got 3 words"),
        ("0.5 0.5 web_text_document code", ValueError, "got '0.5' '0.5'"),
        ("web_text_document 0.5", ValueError, "mixes prefixes and weights"),
        ("-1 web_text_document", ValueError, "must be finite and >= 0, got -1"),
        ("nan web_text_document", ValueError, "must be finite and >= 0, got nan"),
        ("0 web_text_document 0.0 code", ValueError, "every weight of the blend .* is 0"),
        ("1 nowhere", FileNotFoundError, "nowhere.idx' does not exist"),
    ],
)
def test_bad_blends_say_why(pairs, blend, error, message):
    with pytest.raises(error, match=message):
        read_blend(blend, 10, base=pairs)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="blend file .* does not exist"):
        read_blend_file(tmp_path / "none.txt", 10)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected an object of splits"):
        read_split_blends(tmp_path / "bad.json", 10)
    (tmp_path / "typo.json").write_text('{"trian": []}')
    with pytest.raises(ValueError, match="did you mean 'train'"):
        read_split_blends(tmp_path / "typo.json", 10)


def test_prefixes_with_one_file_name_get_distinct_source_names(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_megatron(tmp_path / folder / "web", [list(range(100))])
    weights, _ = read_blend("1 a/web 3 b/web", 10, base=tmp_path)
    assert weights == {"a/web": 1.0, "b/web": 3.0}
    # the weights follow the paths: the same mix listed in another order is the same
    # (by the order of the list, 'web' and 'web-2' swapped weights without a word)
    swapped, _ = read_blend("3 b/web 1 a/web", 10, base=tmp_path)
    assert swapped == weights
    plans = [Plan(Mixture(weights=w), global_batch_size=8) for w in (weights, swapped)]
    assert dict(zip(weights, plans[0].consumed(10))) == dict(zip(swapped, plans[1].consumed(10)))
    write_megatron(tmp_path / "web", [list(range(100))])  # a file name alone stays short
    three, _ = read_blend("1 a/web 1 b/web 1 web", 10, base=tmp_path)
    assert list(three) == ["a/web", "b/web", "web"]
    with pytest.raises(ValueError, match=r"lists 'a/web' twice \('a/web' and './a/web'\)"):
        read_blend("1 a/web 3 ./a/web", 10, base=tmp_path)


def test_relative_prefixes_are_read_from_the_working_directory(tmp_path, monkeypatch):
    from annealmix.blends import read_file_list

    (tmp_path / "data").mkdir()
    write_megatron(tmp_path / "data" / "web#1", [list(range(100))])
    listed = tmp_path / "lists" / "list.txt"
    listed.parent.mkdir()
    listed.write_text("# weight prefix corpus\n1 data/web#1 web  # a '#' inside a path stays\n")
    monkeypatch.chdir(tmp_path)
    weights, _, corpora = read_file_list(listed, 10)
    assert weights == {"web/web#1": 1.0} and corpora == {"web": ["web/web#1"]}
    # found next to the list but not from the working directory: the error says so
    (tmp_path / "lists" / "data").mkdir()
    write_megatron(tmp_path / "lists" / "data" / "code", [list(range(100))])
    listed.write_text("1 data/web#1 web\n1 data/code code\n")
    expected = r"list.txt:2: .*data/code.idx does not exist: relative prefixes are read from "
    with pytest.raises(FileNotFoundError, match=expected + "the working directory.*next to"):
        read_file_list(listed, 10)
    monkeypatch.chdir(tmp_path / "lists")
    with pytest.raises(FileNotFoundError, match=r"list.txt:1: .*web#1"):
        read_file_list(listed, 10)
    listed.write_text("1 data/code code\n")
    assert read_file_list(listed, 10, base=tmp_path / "lists")[0] == {"code/code": 1.0}


@pytest.mark.parametrize("split", ["969,30,1", "99,1,0", "1", "80,20", "98,2,0", "3,3,3"])
@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_splits_cut_documents_where_megatron_cuts_them(split, n):
    config = pytest.importorskip("megatron.core.datasets.blended_megatron_dataset_config")
    from annealmix.blends import split_bounds

    matrix = config.convert_split_vector_to_split_matrix(config.parse_and_normalize_split(split))
    theirs = {}
    for name, bookends in zip(("train", "valid", "test"), matrix):
        if bookends is not None:  # Megatron's builder: round(lo * n), round(hi * n)
            lo, hi = int(round(bookends[0] * n)), int(round(bookends[1] * n))
            if hi > lo:
                theirs[name] = (lo, hi)
    assert split_bounds(split, n) == theirs


def test_a_blend_reads_one_split_of_each_dataset(pairs):
    _, train = read_blend("web_text_document", 10, base=pairs, split="1,1")
    _, valid = read_blend("web_text_document", 10, base=pairs, split="1,1", subset="valid")
    # two documents: [0, 500) and [500, 1001); train is the first, valid the second
    assert train["web_text_document"].documents.document(0).tolist() == list(range(500))
    assert valid["web_text_document"].documents.document(0).tolist() == list(range(500, 1001))
    with pytest.raises(ValueError, match="gives its 2 documents no test part"):
        read_blend("web_text_document", 10, base=pairs, split="1,1", subset="test")
    with pytest.raises(ValueError, match="unknown subset 'dev'"):
        read_blend("web_text_document", 10, base=pairs, split="1,1", subset="dev")
    with pytest.raises(ValueError, match='split must be numbers like "969,30,1"'):
        read_blend("web_text_document", 10, base=pairs, split="train")


def file_list(tmp_path, text):
    for name, n in (("books-0000", 400), ("books-0001", 4000), ("web-0000", 900)):
        write_megatron(tmp_path / f"{name}_text_document", [list(range(n)), list(range(n + 1))])
    (tmp_path / "list.txt").write_text(text)
    return tmp_path / "list.txt"


ALCF = """# weight prefix corpus, as ALCF's gen_file_list.py writes them
0.3 books-0000_text_document books
0.1 books-0001_text_document books
0.6 web-0000_text_document web
"""


def test_a_data_file_list_honours_the_weights_of_the_files_inside_a_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from annealmix import Stream
    from annealmix.blends import read_file_list, scale_corpora

    weights, sources, corpora = read_file_list(file_list(tmp_path, ALCF), 10)
    assert corpora == {"books": ["books/books-0000_text_document",
                                 "books/books-0001_text_document"],
                       "web": ["web/web-0000_text_document"]}  # fmt: skip
    assert list(weights.values()) == [0.3, 0.1, 0.6]
    # the small file is drawn 3 times as often as the 10x larger one: as listed, not by size
    plan = Plan(Mixture(weights=weights), global_batch_size=40,
                sizes={n: len(s) for n, s in sources.items()})  # fmt: skip
    counts = plan.consumed(100)
    assert np.abs(counts - [1200, 400, 2400]).max() <= 1  # within one sample
    # a corpus-level anneal keeps each corpus's files in their listed ratio
    target = scale_corpora(weights, corpora, {"books": 0.8, "web": 0.2})
    assert target == pytest.approx({"books/books-0000_text_document": 0.6,
                                    "books/books-0001_text_document": 0.2,
                                    "web/web-0000_text_document": 0.2})  # fmt: skip
    mix = Mixture(weights=weights, phases=[Phase(start_step=10, end_step=50, weights=target)])
    batch = Stream(Plan(mix, global_batch_size=40)).take(60)
    assert np.bincount(batch.sources[55], minlength=3).tolist() == [24, 8, 8]
    with pytest.raises(ValueError, match="corpus"):
        scale_corpora(weights, corpora, {"novels": 1.0})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.3 books-0000_text_document\n", r"list.txt:1: expected 'weight prefix corpus'"),
        ("# only a comment\n", "names no files"),
        ("x books-0000_text_document books\n", "expected 'weight prefix corpus'"),
        ("-1 books-0000_text_document books\n", "must be finite and >= 0"),
        ("0 books-0000_text_document books\n", "every weight of the data file list is 0"),
        ("1 missing_text_document books\n", "missing_text_document"),
    ],
)
def test_bad_file_lists_say_where(tmp_path, text, message, monkeypatch):
    from annealmix.blends import read_file_list

    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_file_list(file_list(tmp_path, text), 10)


COOLDOWN = """0.5 ./books-0001_text_document books
0.2 books-0002_text_document books
0.3 web-0000_text_document web
"""


def test_two_lists_are_one_set_of_sources_and_each_list_a_mix_of_them(tmp_path, monkeypatch):
    from annealmix.blends import read_file_list, read_file_lists

    monkeypatch.chdir(tmp_path)
    first = file_list(tmp_path, ALCF)
    write_megatron(tmp_path / "books-0002_text_document", [list(range(300))])
    (tmp_path / "cooldown.txt").write_text(COOLDOWN)
    (before, after), sources, corpora = read_file_lists([first, tmp_path / "cooldown.txt"], 10)
    # one source per file, however a list writes its path; named as one list names them
    names = ["books/books-0000_text_document", "books/books-0001_text_document",
             "web/web-0000_text_document", "books/books-0002_text_document"]  # fmt: skip
    assert list(sources) == names and list(before) == names and list(after) == names
    assert list(before.values()) == [0.3, 0.1, 0.6, 0.0]
    assert list(after.values()) == [0.0, 0.5, 0.3, 0.2]
    assert corpora == {"books": [names[0], names[1], names[3]], "web": [names[2]]}
    # one list read alone is read_file_list, names and weights alike
    (alone,), _, _ = read_file_lists([first], 10)
    assert alone == read_file_list(first, 10)[0]
    plan = Plan(Mixture(weights=before, phases=[Phase(start_step=0, end_step=9, weights=after)]),
                global_batch_size=20, sizes={n: len(x) for n, x in sources.items()},
                corpora=corpora)  # fmt: skip
    assert plan.counts(9, 10)[0].tolist() == [0, 10, 6, 4]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("1 books-0000_text_document web\n", r"cooldown.txt:1: .* is in corpus 'web' here and "
                                             r"in 'books' at .*list.txt:2"),
        ("1 web-0000_text_document web\n2 ./web-0000_text_document web\n",
         r"cooldown.txt:2: lists .*web-0000_text_document' a second time"),
        ("0 web-0000_text_document web\n", r"cooldown.txt: every weight .* is 0"),
        ("# nothing\n", r"cooldown.txt: the data file list names no files"),
    ],
)  # fmt: skip
def test_bad_pairs_of_lists_say_which_line_of_which_list(tmp_path, monkeypatch, second, message):
    from annealmix.blends import read_file_lists

    monkeypatch.chdir(tmp_path)
    first = file_list(tmp_path, ALCF)
    (tmp_path / "cooldown.txt").write_text(second)
    with pytest.raises(ValueError, match=message):
        read_file_lists([first, tmp_path / "cooldown.txt"], 10)
    with pytest.raises(ValueError, match="a non-empty list of data file lists"):
        read_file_lists(first, 10)


def test_a_long_list_with_a_bad_file_names_it_and_its_line_and_leaves_nothing_open(
    tmp_path, monkeypatch
):
    import gc
    from pathlib import Path

    from annealmix.blends import read_file_list

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    lines = []
    for i in range(300):
        write_megatron(tmp_path / f"f{i:03d}_text_document", [list(range(30)), list(range(11))])
        lines.append(f"1 {'d/../' * (i % 2)}f{i:03d}_text_document c{i % 7}")  # closed as mapped
    (tmp_path / "f249_text_document.bin").unlink()  # line 250
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")

    def open_files():
        gc.collect()
        return len(list(Path("/proc/self/fd").iterdir())) if Path("/proc/self/fd").is_dir() else 0

    before = open_files()
    expected = r"1 of the data file list's 300 files do not exist \(nothing was opened\): "
    with pytest.raises(FileNotFoundError, match=expected + r".*list.txt:250: .*f249_text_doc"):
        read_file_list(tmp_path / "list.txt", 10)
    write_megatron(tmp_path / "f249_text_document", [list(range(30)), list(range(11))])
    idx = tmp_path / "f279_text_document.idx"
    idx.write_bytes(idx.read_bytes()[:40])  # truncated: line 280
    with pytest.raises(ValueError, match=r"list.txt:280: .*f279_text_document.idx.* truncated"):
        read_file_list(tmp_path / "list.txt", 10)
    assert open_files() == before  # the 279 pairs opened before it are closed again
