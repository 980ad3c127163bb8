"""Thousands of files: Megatron pairs mapped only while read, through a bounded pool."""

import gc
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_sources import write_megatron

from annealmix import Mixture, Plan, Stream, files
from annealmix.blends import read_file_list
from annealmix.files import Mapped, max_open_files, release
from annealmix.reading import read_grouped


def open_files() -> int:
    gc.collect()
    return len(list(Path("/proc/self/fd").iterdir()))


def write_list(folder: Path, files: int) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(files):
        docs = [rng.integers(1, 1000, int(n)).tolist() for n in rng.integers(5, 60, 12)]
        write_megatron(folder / f"f{i:04d}_text_document", docs)
        lines.append(f"{rng.lognormal():.5f} {folder / f'f{i:04d}_text_document'} c{i % 5}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")


@pytest.mark.filterwarnings("ignore:annealmix.*mapped again")  # the pool is small on purpose
def test_a_list_of_many_files_holds_at_most_the_pool_of_maps(tmp_path, monkeypatch):
    listed = write_list(tmp_path, 120)
    monkeypatch.setenv("ANNEALMIX_MAX_OPEN_FILES", "6")
    release()  # what earlier reads left in the pool
    before = open_files()
    weights, sources, corpora = read_file_list(listed, 16)
    assert open_files() - before <= 6
    plan = Plan(Mixture(weights=weights), global_batch_size=64, corpora=corpora,
                sizes={n: len(s) for n, s in sources.items()})  # fmt: skip
    stream = Stream(plan)
    seen = set()
    for _ in range(20):
        batch = stream.take(1)
        for k in np.unique(batch.sources).tolist():
            at = batch.sources == k
            source = sources[plan.mixture.sources[k]]
            got = source.read(batch.draws[at] // len(source), batch.indices[at])
            assert got.shape == (int(at.sum()), 17)
            seen.add(k)
        assert open_files() - before <= 6
    assert len(seen) > 60  # most files were read, and closed again
    release(tmp_path.iterdir())
    assert open_files() == before


def test_a_pool_smaller_than_the_files_of_a_step_says_so_once(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_churn", files._Churn())
    monkeypatch.setenv("ANNEALMIX_MAX_OPEN_FILES", "400")
    release()
    weights, sources, corpora = read_file_list(write_list(tmp_path, 60), 16)
    plan = Plan(Mixture(weights=weights), global_batch_size=64, corpora=corpora,
                sizes={n: len(s) for n, s in sources.items()})  # fmt: skip
    stream = Stream(plan)

    def read(steps):
        for _ in range(steps):
            batch = stream.take(1)
            ids = batch.sources.ravel()
            sizes = np.array([len(sources[n]) for n in plan.mixture.sources])
            read_grouped([sources[n] for n in plan.mixture.sources], ids,
                         batch.draws.ravel() // sizes[ids], batch.indices.ravel())  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read(40)  # opening the list mapped every file once; every map stays: quiet
    monkeypatch.setenv("ANNEALMIX_MAX_OPEN_FILES", "6")
    release()
    with pytest.warns(UserWarning, match="mapped again a file the pool of 6 maps had closed"):
        read(40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read(40)  # said once
    release(tmp_path.iterdir())


def test_a_list_larger_than_ulimit_reads_under_ulimit_256(tmp_path):
    listed = write_list(tmp_path, 400)  # 800 files: more than the limit allows open at once
    script = f"""
import resource, numpy as np
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from annealmix import Mixture, Plan, Stream
from annealmix.blends import read_file_list
from annealmix.files import max_open_files
weights, sources, corpora = read_file_list({str(listed)!r}, 16)
plan = Plan(Mixture(weights=weights), global_batch_size=256, corpora=corpora,
            sizes={{n: len(s) for n, s in sources.items()}})
stream, read = Stream(plan), 0
for _ in range(8):
    batch = stream.take(1)
    for k in np.unique(batch.sources).tolist():
        at = batch.sources == k
        source = sources[plan.mixture.sources[k]]
        read += len(source.read(batch.draws[at] // len(source), batch.indices[at]))
print(max_open_files(), read)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["64", str(8 * 256)]


def test_mapped_reads_like_an_array_and_pickles_as_its_path(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(100, dtype="<u2").tofile(path)
    m = Mapped(path, "<u2", offset=20, count=50)  # values 10 .. 59
    assert len(m) == m.size == 50 and m.shape == (50,) and m.ndim == 1
    assert int(m[0]) == 10 and int(m[-1]) == 59
    part = m[5:9]
    assert isinstance(part, Mapped) and np.asarray(part).tolist() == [15, 16, 17, 18]
    assert m[np.array([1, 3])].tolist() == [11, 13] and int(np.sum(m)) == sum(range(10, 60))
    back = pickle.loads(pickle.dumps(m))
    assert (back.path, back.offset, back.count) == (m.path, 20, 50)
    assert np.asarray(back).tolist() == list(range(10, 60))


@pytest.mark.parametrize("value", ["0", "many", "-3"])
def test_a_bad_pool_size_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("ANNEALMIX_MAX_OPEN_FILES", value)
    with pytest.raises(ValueError, match=f"ANNEALMIX_MAX_OPEN_FILES must be .* got '{value}'"):
        max_open_files()


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory) -> Path:
    return write_list(tmp_path_factory.mktemp("list"), 10_000)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        ("missing", FileNotFoundError, r"1 of the data file list's 10000 files do not exist "
                                       r"\(nothing was opened\): .*list.txt:7778: .*f7777_te"),
        ("truncated", ValueError, r"list.txt:7778: .*f7777_text_document.idx.* truncated"),
        ("corrupt", ValueError, r"list.txt:7778: .*f7777_text_document.idx: sequence 0 spans "
                                r"bytes \[1000000000, .*does not belong to this data file"),
    ],
)  # fmt: skip
def test_one_bad_file_in_ten_thousand_is_named_with_its_line_and_nothing_stays_open(
    ten_thousand, fault, error, match
):
    stem = ten_thousand.parent / "f7777_text_document"
    bin_, idx = stem.with_suffix(".bin"), stem.with_suffix(".idx")
    saved = idx.read_bytes()
    if fault == "missing":
        bin_.rename(stem.with_suffix(".moved"))
    elif fault == "truncated":
        idx.write_bytes(saved[:40])
    else:  # the first sequence's byte pointer far past the end of its .bin
        count = int.from_bytes(saved[18:26], "little")
        at = 34 + 4 * count
        idx.write_bytes(saved[:at] + (10**9).to_bytes(8, "little") + saved[at + 8 :])
    release()
    before = open_files()
    try:
        with pytest.raises(error, match=match):
            read_file_list(ten_thousand, 16)
        assert open_files() == before
    finally:
        idx.write_bytes(saved)
        if fault == "missing":
            stem.with_suffix(".moved").rename(bin_)


def test_many_nanogpt_shards_hold_at_most_the_pool_of_maps(tmp_path, monkeypatch):
    from annealmix.sources import open_token_source

    for i in range(40):
        np.arange(i, i + 500, dtype=np.uint16).tofile(tmp_path / f"shard_{i:03d}.bin")
    monkeypatch.setenv("ANNEALMIX_MAX_OPEN_FILES", "5")
    release()
    before = open_files()
    source = open_token_source(str(tmp_path / "shard_*.bin"), "nanogpt", seq_len=9)
    got = source.read(np.zeros(400, dtype=np.int64), np.arange(0, 40 * 55, 5.5).astype(np.int64))
    assert open_files() - before <= 5
    for row, i in zip(got, np.arange(0, 40 * 55, 5.5).astype(np.int64).tolist()):
        shard, j = divmod(i, 55)  # 55 windows of 9 + 1 tokens in each shard of 500
        assert row.tolist() == list(range(shard + 9 * j, shard + 9 * j + 10))
