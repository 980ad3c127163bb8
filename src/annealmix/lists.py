"""Data-file-lists in a config: ``[lists]`` written out as sources, corpora and phases.

::

    [lists]
    paths = ["pretrain.txt", "cooldown.txt"]  # ALCF data-file-lists: weight prefix corpus
    seq_len = 4096                            # each file's documents packed in windows
    base = "/lus/data"                        # where relative prefixes are read from
                                              # (default: the config's folder)

    [[phases]]
    start_step = 90000
    end_step = 99999
    schedule = "cosine"
    list = "cooldown.txt"                     # the phase's target: that list's weights

The first list gives the starting weights; a phase's ``list`` (one of ``paths``) gives
its target, the mix moving from one list to the next inside one run. ``expand``
rewrites the parsed file before anything else reads it: each file of the lists becomes
a source ``corpus/file`` (a Megatron pair, as ``annealmix.blends.read_file_lists``
names and weighs it), the lists' corpora the ``[corpora]`` table (so the plan counts
each corpus exactly and splits it among its files), and each ``list`` its weights. The
rest of the config reads as any other, and ``dump_config`` writes that form. Reading
the lists reads their text and looks for each pair; no data file is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _validate
from .blends import list_files

__all__ = ["expand"]

_LISTS = ("paths", "seq_len", "base")


def expand(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The parsed config with its ``[lists]`` written out (unchanged without one)."""
    if "lists" not in raw:
        for i, phase in enumerate(raw.get("phases", [])):
            if isinstance(phase, dict) and "list" in phase:
                raise ValueError(f"phases[{i}] names a list, but the config has no [lists]")
        return raw
    table = raw["lists"]
    if not isinstance(table, dict):
        raise ValueError(f"lists must be a table ([lists] with paths and seq_len), got {table!r}")
    for key in table:
        _validate.choice("key in lists:", key, _LISTS)
    for key in ("sources", "corpora"):
        if key in raw:
            raise ValueError(
                f"the config has both [lists] and [{key}]: the lists give the sources and their "
                f"corpora; remove [{key}], or the lists"
            )
    paths = table.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError(
            f"lists paths must be a non-empty list of data-file-list paths, got {paths!r}"
        )
    if "seq_len" not in table:
        raise ValueError("lists lacks 'seq_len' (the tokens of a window, e.g. seq_len = 4096)")
    seq_len = _validate.integer("lists seq_len", table["seq_len"], minimum=1)
    where = (base / table["base"]) if "base" in table else base
    weights, prefixes, corpora = list_files([base / p for p in paths], where.resolve())
    sources = {
        name: {"weight": weights[0][name], "path": f"{prefix}.bin", "format": "megatron",
               "seq_len": seq_len}
        for name, prefix in prefixes.items()
    }  # fmt: skip
    phases = []
    for i, phase in enumerate(raw.get("phases", [])):
        if isinstance(phase, dict) and "list" in phase:
            if "weights" in phase:
                raise ValueError(
                    f"phases[{i}] has both 'list' and 'weights'; its target is one of them"
                )
            target = _validate.choice(f"phases[{i}] list", phase["list"], tuple(paths))
            phase = {k: v for k, v in phase.items() if k != "list"}
            phase["weights"] = weights[paths.index(target)]
        phases.append(phase)
    rest = {k: v for k, v in raw.items() if k != "lists"}
    return rest | {"sources": sources, "corpora": corpora, "phases": phases}
