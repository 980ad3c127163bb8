"""Megatron-LM's blend arguments as annealmix sources and weights.

Megatron names its training data with ``--data-path`` (or a file of the same words,
``--data-args-path``, or per split, ``--per-split-data-args-path`` with a JSON of
``{"train": [...], "valid": [...], "test": [...]}``): either ``w1 prefix1 w2 prefix2
...``, weights and ``PREFIX`` of ``PREFIX.bin``/``PREFIX.idx`` pairs alternating, or
prefixes alone, which Megatron weights by each dataset's size. ``read_blend`` gives
the same blend as annealmix sources (each pair's documents packed into windows and
reshuffled every epoch, as Megatron's GPT dataset does: ``annealmix.packing.Packed``)
and starting weights, ready for a ``Mixture``; two blends of the same prefixes (an
old and a new mix) become the start and a phase's target of one anneal.

A source is named by its file name, or, where two prefixes share it, by the
shortest ending of their paths that tells them apart (``en/web``, ``de/web``):
a name follows the path, never the order of the blend, so a weight follows its
file from one blend to the other. A prefix listed twice is refused. Relative
prefixes are read from the working directory, as Megatron and ALCF's
Megatron-DeepSpeed read them.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from . import _validate
from .documents import open_documents
from .files import release
from .packing import Packed
from .ratios import half_unit, kept_ratios
from .sample_dict import MEGATRON_FLAGS, check_flags

__all__ = [
    "SPLITS",
    "list_files",
    "read_blend",
    "read_blend_file",
    "read_file_list",
    "read_file_lists",
    "read_split_blends",
    "scale_corpora",
    "split_bounds",
]

SPLITS = ("train", "valid", "test")


def split_bounds(split: str, num_documents: int) -> dict[str, tuple[int, int]]:
    """Each split's documents ``[start, stop)`` of a dataset, as Megatron's ``--split``
    (``"969,30,1"``: relative sizes of train, valid and test, missing ones 0) cuts
    every dataset of a blend: by document, in file order, at
    ``round(cumulative fraction x documents)``. A split of size 0 is absent."""
    if not isinstance(split, str):
        raise ValueError(f'split must be a string like "969,30,1", got {split!r}')
    words = [w for w in re.split(r"[,/\s]+", split.strip()) if w]
    try:
        sizes = [float(w) for w in words]
    except ValueError:
        raise ValueError(
            f'split must be numbers like "969,30,1" (train, valid, test), got {split!r}'
        ) from None
    if not 1 <= len(sizes) <= 3 or any(not 0 <= x < float("inf") for x in sizes) or not sum(sizes):
        raise ValueError(
            f"split {split!r} must give 1 to 3 finite sizes >= 0 (train, valid, test), not all "
            'zero; e.g. "969,30,1"'
        )
    sizes += [0.0] * (3 - len(sizes))
    total = sum(sizes)
    edges = [0.0]
    for x in sizes:
        edges.append(edges[-1] + x / total)
    out = {}
    for name, lo, hi in zip(SPLITS, edges[:-1], edges[1:]):
        start, stop = round(lo * num_documents), round(hi * num_documents)
        if hi > lo and stop > start:
            out[name] = (start, stop)
    return out


def _words(data_path: str | Sequence[str]) -> list[str]:
    words = data_path.split() if isinstance(data_path, str) else [str(w) for w in data_path]
    if not words:
        raise ValueError("the blend is empty; give 'w1 prefix1 w2 prefix2 ...' or prefixes")
    return words


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def read_blend(
    data_path: str | Sequence[str],
    seq_len: int,
    *,
    base: str | Path | None = None,
    seed: int = 0,
    output: str = "tokens",
    split: str | None = None,
    subset: str = "train",
    listed_in: str | Path | None = None,
    **megatron: bool,
) -> tuple[dict[str, float], dict[str, Packed]]:
    """(weights, sources) of a Megatron ``--data-path``, sources named by their paths
    (see the module doc).

    Weights are as given (relative), or, for prefixes alone, each dataset's windows
    of ``seq_len`` tokens, as Megatron weights an unweighted blend by size.
    Relative prefixes are read from ``base`` (default: the working directory; a
    missing one that exists next to ``listed_in``, the file the blend came from, is
    named so in the error); ``seed`` keys the per-epoch document
    orders and ``output`` is each window's form (``Packed``). With ``split``
    (Megatron's ``--split``, ``"969,30,1"``), each source holds only the documents
    of ``subset`` (``"train"``, ``"valid"`` or ``"test"``; ``split_bounds``).
    ``megatron`` takes Megatron's switches by their names, off by default as there:
    ``reset_position_ids``, ``reset_attention_mask``, ``eod_mask_loss`` (``Packed``;
    they need ``output="dict"``).
    """
    _check_megatron(megatron, output)
    if split is not None:
        _validate.choice("subset", subset, SPLITS)
    words = _words(data_path)
    weighted = _is_number(words[0])
    if weighted:
        if len(words) % 2:
            raise ValueError(
                f"a weighted blend alternates weight and prefix, got {len(words)} words ending "
                f"in {words[-1]!r}; give 'w1 prefix1 w2 prefix2 ...'"
            )
        pairs = list(zip(words[::2], words[1::2]))
        for weight, prefix in pairs:
            if not _is_number(weight) or _is_number(prefix):
                raise ValueError(
                    f"a weighted blend alternates weight and prefix, got {weight!r} "
                    f"{prefix!r}; give 'w1 prefix1 w2 prefix2 ...'"
                )
        if not any(float(weight) for weight, _ in pairs):
            raise ValueError(
                f"every weight of the blend {' '.join(words)!r} is 0: nothing would be drawn; "
                "give at least one prefix a positive weight"
            )
    else:
        if any(_is_number(w) for w in words):
            raise ValueError(
                f"the blend mixes prefixes and weights ({' '.join(words)!r}); give a weight "
                "before every prefix or none"
            )
        pairs = [(None, prefix) for prefix in words]
    weights: dict[str, float] = {}
    sources: dict[str, Packed] = {}
    names = _names([prefix for _, prefix in pairs], "the blend")
    for (weight, prefix), name in zip(pairs, names):
        path = _located(prefix, base, listed_in)
        sources[name] = _packed(path, prefix, name, seq_len, seed, output, split, subset,
                                megatron)  # fmt: skip
        weights[name] = _weight(prefix, len(sources[name]) if weight is None else weight)
    return weights, sources


def _names(prefixes: Sequence[str], where: str) -> list[str]:
    """Each prefix's name: its file name, or the shortest ending of its path that no
    other prefix shares (so names follow paths, whatever the order)."""
    paths = [PurePath(os.path.normpath(p.removesuffix(".bin").removesuffix(".idx")))
             for p in prefixes]  # fmt: skip
    seen: dict[PurePath, str] = {}
    for prefix, path in zip(prefixes, paths):
        if path in seen:
            raise ValueError(
                f"{where} lists {str(path)!r} twice ({seen[path]!r} and {prefix!r}); list it "
                "once, with the weights added"
            )
        seen[path] = prefix
    names: list[str | None] = [None] * len(paths)
    for depth in range(1, max(len(p.parts) for p in paths) + 1):  # O(paths x depth)
        endings = Counter(p.parts[-depth:] for p in paths)
        for i, p in enumerate(paths):
            if names[i] is None and (endings[p.parts[-depth:]] == 1 or depth == len(p.parts)):
                names[i] = "/".join(p.parts[-depth:])
    return names  # type: ignore[return-value]


def _located(prefix: str, base: str | Path | None, listed_in: str | Path | None) -> Path:
    """Where a prefix's pair is: as given when absolute, else under ``base`` (default:
    the working directory); a missing pair that exists next to ``listed_in`` is
    named in the error."""
    path = Path(prefix)
    if path.is_absolute():
        return path
    path = Path(base if base is not None else os.getcwd()) / prefix
    stem = str(path).removesuffix(".bin").removesuffix(".idx")
    if listed_in is not None and not Path(stem + ".idx").exists():
        beside = Path(listed_in).parent / prefix
        found = str(beside).removesuffix(".bin").removesuffix(".idx")
        if Path(found + ".idx").exists():
            raise FileNotFoundError(
                f"{stem}.idx does not exist: relative prefixes are read from the working "
                f"directory, as Megatron reads them, and {prefix!r} is next to "
                f"{str(listed_in)!r} instead ({found}); run from {str(Path(listed_in).parent)!r} "
                "or give absolute prefixes"
            )
    return path


def _check_megatron(megatron: dict[str, bool], output: str) -> None:
    unknown = sorted(set(megatron) - set(MEGATRON_FLAGS))
    if unknown:
        raise TypeError(f"unknown options {unknown}; Megatron's switches are {MEGATRON_FLAGS}")
    check_flags(megatron, output, "the blend")


def _packed(
    path: Path, prefix: str, name: str, seq_len: int, seed: int, output: str,
    split: str | None, subset: str, megatron: dict[str, bool],
) -> Packed:  # fmt: skip
    """One Megatron pair's documents (``subset`` of ``split``), packed."""
    docs = open_documents(str(path), "megatron", name=name)
    if split is not None:
        bounds = split_bounds(split, len(docs))
        if subset not in bounds:
            raise ValueError(
                f"{prefix}: split {split!r} gives its {len(docs)} documents no {subset} "
                "part; give that part a size, or more documents"
            )
        docs = docs.subset(*bounds[subset])
    return Packed(docs, seq_len, seed=seed, name=name, output=output, **megatron)


def _weight(prefix: str, weight: Any) -> float:
    value = float(weight)
    if not 0 <= value < float("inf"):  # also refuses nan
        raise ValueError(f"weight of {prefix!r} must be finite and >= 0, got {weight}")
    return value


def read_blend_file(
    path: str | Path, seq_len: int, *, base: str | Path | None = None, **options: Any
) -> tuple[dict[str, float], dict[str, Packed]]:
    """``read_blend`` of a ``--data-args-path`` file (the same words, whitespace-split);
    relative prefixes are read from ``base`` (default: the working directory);
    ``options`` are ``read_blend``'s."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"blend file {str(path)!r} does not exist")
    return read_blend(path.read_text(), seq_len, base=base, listed_in=path, **options)


def read_split_blends(
    path: str | Path, seq_len: int, *, base: str | Path | None = None, **options: Any
) -> dict[str, tuple[dict[str, float], dict[str, Packed]]]:
    """``read_blend`` per split of a ``--per-split-data-args-path`` JSON file
    (``{"train": [...], "valid": [...], "test": [...]}``, each a blend's words);
    relative prefixes are read from ``base`` (default: the working directory);
    ``options`` are ``read_blend``'s."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"per-split blend file {str(path)!r} does not exist")
    try:
        splits = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(splits, dict):
        raise ValueError(f"{path}: expected an object of splits, got {type(splits).__name__}")
    out = {}
    for split, words in splits.items():
        _validate.choice("split", split, ("test", "train", "valid"))
        if words:
            out[split] = read_blend(words, seq_len, base=base, listed_in=path, **options)
    return out


def read_file_list(
    path: str | Path,
    seq_len: int,
    *,
    seed: int = 0,
    output: str = "tokens",
    split: str | None = None,
    subset: str = "train",
    base: str | Path | None = None,
    **megatron: bool,
) -> tuple[dict[str, float], dict[str, Packed], dict[str, list[str]]]:
    """(weights, sources, corpora) of an ALCF / BlendCorpus data-file-list.

    Each line is ``weight prefix corpus`` (a word that starts with ``#`` starts a
    comment; a ``#`` inside a path is part of it); relative prefixes are read from
    ``base`` (default: the working directory, as ALCF's Megatron-DeepSpeed reads
    them). Every file is a source of its own, named ``corpus/file name`` (or
    ``corpus/`` the shortest ending of its path that tells it from the corpus's
    other files), with its listed weight, so the weights inside a
    corpus hold as listed (not in proportion to the files' sizes); ``corpora`` maps
    each corpus to its sources, in the list's order. ``scale_corpora`` gives the
    weights of another mix of the corpora, each corpus's files in their listed
    ratios: the target of an anneal; ``read_file_lists`` reads several lists (a
    pretraining list and a cooldown list) into one set of sources. ``seed``,
    ``output``, ``split``, ``subset`` and Megatron's switches (``megatron``) are as
    for ``read_blend``.
    """
    (weights,), sources, corpora = read_file_lists(
        [path], seq_len, seed=seed, output=output, split=split, subset=subset, base=base,
        **megatron,
    )  # fmt: skip
    return weights, sources, corpora


def read_file_lists(
    paths: Sequence[str | Path],
    seq_len: int,
    *,
    seed: int = 0,
    output: str = "tokens",
    split: str | None = None,
    subset: str = "train",
    base: str | Path | None = None,
    **megatron: bool,
) -> tuple[list[dict[str, float]], dict[str, Packed], dict[str, list[str]]]:
    """(each list's weights, sources, corpora) of several data-file-lists read as one
    set of sources: the lists of one run whose mix moves from one to the next (ALCF's
    pretraining list, then its cooldown list), without a relaunch.

    A file is one source however many lists name it (found by its path, however
    each list writes it), named as ``read_file_list`` names it among every file of
    its corpus in any list; each list's weights cover every source, 0 for the files
    it does not name. A file must be in one corpus in every list that names it (a
    corpus is what moves together). Every line of every list is checked before any
    file is opened, and each file is opened once. A corpus whose files a later list
    weighs in the first list's ratios, to the precision the weights are written at,
    gets exactly those ratios there (``annealmix.ratios``: one unit for ``corpora=``).
    """
    _check_megatron(megatron, output)
    if split is not None:
        _validate.choice("subset", subset, SPLITS)
    files, named, mixes = _catalog(paths, base)
    sources: dict[str, Packed] = {}
    failure = None
    for stem, (where, prefix, _, located) in files.items():
        name = named[stem]
        try:
            sources[name] = _packed(located, prefix, name, seq_len, seed, output, split, subset,
                                    megatron)  # fmt: skip
        except (OSError, ValueError) as err:  # a truncated or corrupt pair
            failure = type(err), f"{where}: {err}"
            break
    if failure is not None:  # raised here, so no traceback keeps the opened files
        sources.clear()
        stems = (str(x[3]).removesuffix(".bin").removesuffix(".idx") for x in files.values())
        release(stem + ext for stem in stems for ext in (".bin", ".idx"))  # as they were mapped
        raise failure[0](failure[1])
    weights, corpora = _by_name(files, named, mixes)
    return weights, sources, corpora


def list_files(
    paths: Sequence[str | Path], base: str | Path | None = None
) -> tuple[list[dict[str, float]], dict[str, Path], dict[str, list[str]]]:
    """What ``read_file_lists`` reads, without opening a file: (each list's weights,
    each source's pair prefix, corpora), every line checked and every pair found."""
    files, named, mixes = _catalog(paths, base)
    weights, corpora = _by_name(files, named, mixes)
    return weights, {named[s]: Path(s) for s in files}, corpora


def _by_name(files: dict, named: dict, mixes: list) -> tuple[list[dict], dict[str, list[str]]]:
    """Each list's weights over every file, and the corpora, by source name."""
    zeros = dict.fromkeys((named[s] for s in files), 0.0)  # every file, in list order
    weights = [zeros | {named[s]: w for s, w in by_stem.items()} for by_stem in mixes]
    corpora: dict[str, list[str]] = {}
    for stem, (_, _, corpus, _) in files.items():
        corpora.setdefault(corpus, []).append(named[stem])
    return weights, corpora


def _catalog(paths: Sequence[str | Path], base: str | Path | None) -> tuple[dict, dict, list]:
    """The lists' files (stem -> where first listed, prefix, corpus, path), their names
    (stem -> name) and each list's weights (stem -> weight), every line checked."""
    if isinstance(paths, (str, Path)) or not paths:
        raise ValueError(f"paths must be a non-empty list of data file lists, got {paths!r}")
    files: dict[str, tuple[str, str, str, Path]] = {}  # stem -> (where, prefix, corpus, path)
    mixes: list[dict[str, float]] = []  # each list's weights by stem
    halves: list[dict[str, float]] = []  # and the precision each is written at
    for path in paths:
        mixes.append({})
        halves.append({})
        for number, weight, prefix, corpus in _list_lines(Path(path)):
            where = f"{path}:{number}"
            try:
                located = _located(prefix, base, path)
                stem = os.path.normpath(str(located).removesuffix(".bin").removesuffix(".idx"))
                if stem in mixes[-1]:
                    raise ValueError(
                        f"lists {stem!r} a second time; list it once, with the weights added"
                    )
                mixes[-1][stem] = _weight(prefix, weight)
                halves[-1][stem] = half_unit(weight)
            except (OSError, ValueError) as err:
                raise type(err)(f"{where}: {err}") from None
            first = files.setdefault(stem, (where, prefix, corpus, located))
            if first[2] != corpus:
                raise ValueError(
                    f"{where}: {prefix!r} is in corpus {corpus!r} here and in {first[2]!r} at "
                    f"{first[0]}; a file is in one corpus (what moves together): list it "
                    "under one name in every list"
                )
        if not mixes[-1]:
            raise ValueError(f"{path}: the data file list names no files")
        if not any(mixes[-1].values()):
            raise ValueError(
                f"{path}: every weight of the data file list is 0: nothing would be drawn; "
                "give at least one file a positive weight"
            )
    by_corpus: dict[str, list[str]] = {}
    for stem, (_, _, corpus, _) in files.items():
        by_corpus.setdefault(corpus, []).append(stem)
    named = {}
    for corpus, stems in by_corpus.items():
        where = f"{', '.join(map(str, paths))}: corpus {corpus!r}"
        for stem, name in zip(stems, _names([files[s][1] for s in stems], where)):
            named[stem] = f"{corpus}/{name}"
    missing = [f"{w}: {' and '.join(absent)}" for w, _, _, located in files.values()
               if (absent := _absent(located))]  # fmt: skip
    if missing:
        more = len(missing) - 10
        shown = "; ".join(missing[:10]) + (f"; and {more} more" if more > 0 else "")
        raise FileNotFoundError(
            f"{len(missing)} of the data file list's {len(files)} files do not exist (nothing "
            f"was opened): {shown}"
        )
    corpus_of = {stem: corpus for stem, (_, _, corpus, _) in files.items()}
    return files, named, kept_ratios(mixes, halves, corpus_of)


def _list_lines(path: Path) -> list[tuple[int, str, str, str]]:
    """A data-file-list's lines: (line number, weight, prefix, corpus)."""
    if not path.is_file():
        raise FileNotFoundError(f"data file list {str(path)!r} does not exist")
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        cut = next((i for i, w in enumerate(words) if w.startswith("#")), len(words))
        if not words[:cut]:
            continue
        if cut != 3 or not _is_number(words[0]):
            raise ValueError(
                f"{path}:{number}: expected 'weight prefix corpus', got {line.strip()!r}"
            )
        lines.append((number, *words[:3]))
    return lines


def _absent(located: Path) -> list[str]:
    stem = str(located).removesuffix(".bin").removesuffix(".idx")
    return [stem + ext for ext in (".bin", ".idx") if not Path(stem + ext).is_file()]


def scale_corpora(
    weights: dict[str, float], corpora: dict[str, list[str]], corpus_weights: dict[str, float]
) -> dict[str, float]:
    """File weights that give each corpus its share of ``corpus_weights`` (corpora
    left out get 0), split among the corpus's files in the ratios of ``weights``."""
    for corpus in corpus_weights:
        _validate.choice("corpus", corpus, tuple(corpora))
    out = {}
    for corpus, names in corpora.items():
        share = _weight(corpus, corpus_weights.get(corpus, 0.0))
        listed = sum(weights[n] for n in names)
        if share and not listed:
            raise ValueError(
                f"corpus {corpus!r} lists its files with weight 0, so its files' ratios are "
                "unknown; give them weights in the list"
            )
        for n in names:
            out[n] = share * weights[n] / listed if listed else 0.0
    return out
