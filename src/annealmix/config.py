"""Mixture config files (TOML) <-> ``MixConfig``, the file as data.

::

    seed = 0
    global_batch_size = 1024
    num_steps = 10000           # optimizer steps
    rampup_batch_size = [64, 64, 2_000_000]  # optional: Megatron's --rampup-batch-size
                                # (start, increment, samples) up to global_batch_size; or
                                # batch_sizes = [[0, 256], [500, 1024]]: (first step, size)
    mode = "exact"              # or "random"
    order = "shuffle"           # every source's default: "shuffle", "replacement", "sequential"
    warn_epochs = 4             # warn when a source is read more often than this
    unit = "tokens"             # what weights count; the default where every sample is a
                                # window of one seq_len, else "samples"
    output = "tokens"           # a sample: its seq_len + 1 tokens, or "dict" (Megatron's
                                # tokens, labels, loss_mask, position_ids; document_ids)
    reset_position_ids = false  # Megatron's switches of the dict of packed sources, by
    reset_attention_mask = false  # its names and with its defaults (annealmix.sample_dict)
    eod_mask_loss = false

    [sources.web]               # one table per source, in id order
    weight = 0.8                # starting weight (relative)
    size = 5_000_000            # samples, for planning without data ...
    order = "shuffle"           # this source's order
    max_epochs = 1              # optional: an error if the plan needs more passes

    [sources.code]
    weight = 0.2
    path = "data/code/*.bin"    # ... or token files (a glob or a list), sized from them
    format = "nanogpt"          # "nanogpt" (flat tokens), "llmc", "npy" or "megatron"
    seq_len = 1024              # samples of seq_len + 1 tokens
    vocab_size = 50304          # optional: token ids must be below it (checked on open)
    eos_id = 50256              # flat files: split into documents after every eos_id
    pack = true                 # documents reshuffled each epoch and packed into windows
                                # (a Megatron pair's documents are its sequences); false:
                                # one document per sample, padded (output = "dict")

    [[phases]]
    start_step = 8000
    end_step = 9999
    schedule = "cosine"         # or { name = "sigmoid", steepness = 12 }
    weights = { web = 0.3, code = 0.7 }

    [corpora]                   # optional: sources counted as one corpus (Plan(corpora=))
    text = ["web", "code"]

Instead of ``[sources]`` and ``[corpora]``, a ``[lists]`` table of data-file-lists gives
them (``annealmix.lists``: the first list starts the mix, a phase's ``list`` is its target).

``load_config`` reads it into a ``MixConfig``, which holds what the file says and
nothing else: reading it opens no data. ``MixConfig.open()`` (``annealmix.opened``)
is the one step that opens the files, each once, and returns the sources and the
plan built from the fields and the files, so the two cannot disagree.
``dump_config`` writes it back: loading what it wrote gives the same plan.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _validate
from .lists import expand
from .mixture import Mixture, Phase
from .packing import check_options
from .plan import ORDERS
from .ramp import BatchSizes, ramp_of
from .sample_dict import MEGATRON_FLAGS, check_flags

__all__ = [
    "UNITS",
    "MixConfig",
    "SourceSpec",
    "dump_config",
    "load_config",
    "save_config",
]

_TOP = ("seed", "global_batch_size", "num_steps", "rampup_batch_size", "batch_sizes", "mode",
        "order", "warn_epochs", "unit", "output", *MEGATRON_FLAGS, "sources", "corpora", "lists",
        "phases")  # fmt: skip
_SOURCE = ("weight", "size", "order", "max_epochs", "path", "format", "dtype", "seq_len",
           "vocab_size", "eos_id", "pack", "truncate")  # fmt: skip
UNITS = ("samples", "tokens")
_PHASE = ("start_step", "end_step", "schedule", "weights")


def _check_keys(where: str, table: Any, valid: tuple[str, ...]) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {table!r}")
    for key in table:
        if where == "the config" and key == "replacement":
            raise ValueError(
                "'replacement' is gone: give the default order instead, "
                'order = "replacement" (was true) or order = "shuffle" (was false)'
            )
        if key not in valid:
            _validate.choice(f"key in {where}:", key, valid)


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceSpec:
    """How a config names one source: what the file says, nothing read from data.

    Args:
        name: the source's name.
        weight: its starting weight.
        size: samples, for a source planned without data; ``None`` where ``path``
            gives them (counted when the files are opened).
        order: ``"shuffle"``, ``"replacement"`` or ``"sequential"``; ``None``: the
            config's default.
        max_epochs: the most passes the plan may make over it (``None``: no limit).
        path: token files, a glob or a list (``None``: planning by size only).
        format: the token files' format (see ``annealmix.sources.FORMATS``).
        dtype: the token type of ``nanogpt`` files (``"uint16"`` or ``"uint32"``).
        seq_len: tokens per sample, plus one target token (also counts tokens in
            ``budget`` for a source planned by size).
        vocab_size: token ids must lie below it; checked when the files are opened.
        eos_id: the end-of-text id that splits flat token files into documents.
        pack: pack documents into windows, reshuffled each epoch (``None``: true);
            false: one padded document per sample.
        truncate: an unpacked source cuts documents longer than ``seq_len + 1``
            (else they are an error).
    """

    name: str
    weight: float
    size: int | None = None
    order: str | None = None
    max_epochs: float | None = None
    path: str | list[str] | None = None
    format: str | None = None
    dtype: str | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    eos_id: int | None = None
    pack: bool | None = None
    truncate: bool | None = None

    @property
    def windows(self) -> bool:
        """Whether every sample is a window of ``seq_len`` tokens (plus one target)."""
        return self.seq_len is not None and self.pack is not False


@dataclass(frozen=True, kw_only=True)
class MixConfig:
    """A whole run's mixing set-up: the config file's fields, checked.

    Args:
        global_batch_size: samples per optimizer step, across all ranks (under a
            ramp, the size it ends at).
        num_steps: optimizer steps the run will take.
        rampup_batch_size: Megatron's ``--rampup-batch-size``: (start, increment,
            samples), ``BatchSizes.megatron`` up to ``global_batch_size``.
        batch_sizes: any ramp, as (first step, size) pairs from step 0
            (``BatchSizes``); its last size is ``global_batch_size``.
        sources: each source as the config describes it, in id order.
        phases: the mixture's phases.
        seed: keys every random choice.
        mode: ``"exact"`` or ``"random"``.
        order: every source's order unless it names its own.
        warn_epochs: passes over a source above which ``budget`` warns (in tokens
            where a source's tokens are known).
        unit: what the weights count, ``"tokens"`` or ``"samples"``; ``None``:
            tokens where every source is windows of one ``seq_len`` (there a
            sample's share is its token share, exactly), else samples.
        output: a sample as ``"tokens"`` (its ``seq_len + 1`` token ids) or ``"dict"``
            (Megatron's sample dict, with ``document_ids``; unpacked sources need it).
        reset_position_ids, reset_attention_mask, eod_mask_loss: Megatron's switches
            of the packed sources' dict (``annealmix.packing.Packed``), off as there.
        corpora: groups of sources counted together (``Plan(corpora=)``): each corpus
            exactly, its files split in closed form; ``None``: each source alone.
        base: the folder relative source paths are read from (the config's).
    """

    global_batch_size: int
    num_steps: int
    sources: tuple[SourceSpec, ...]
    rampup_batch_size: tuple[int, int, int] | None = None
    batch_sizes: tuple[tuple[int, int], ...] | None = None
    phases: tuple[Phase, ...] = ()
    seed: int = 0
    mode: str = "exact"
    order: str = "shuffle"
    warn_epochs: float = 4.0
    unit: str | None = None
    output: str = "tokens"
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    corpora: dict[str, list[str]] | None = None
    base: Path = field(default=Path("."), compare=False)

    @property
    def megatron(self) -> dict[str, bool]:
        """Megatron's switches as ``annealmix.packing.open_source`` takes them."""
        return {flag: getattr(self, flag) for flag in MEGATRON_FLAGS}

    @property
    def ramp(self) -> BatchSizes | None:
        """The batch sizes by step (``rampup_batch_size`` or ``batch_sizes``), or ``None``."""
        return ramp_of(self.rampup_batch_size, self.batch_sizes, self.global_batch_size)

    def __post_init__(self) -> None:
        _validate.integer("num_steps", self.num_steps, minimum=1)
        _validate.integer("global_batch_size", self.global_batch_size, minimum=1)
        ramp_of(self.rampup_batch_size, self.batch_sizes, self.global_batch_size)  # refused early
        # A config chooses how samples are drawn; tokens follow from unit = "tokens" over
        # unpacked sources, online plans from the loop (annealmix.online.online(plan)).
        _validate.choice("mode", self.mode, ("exact", "random"))
        _validate.choice("order", self.order, ORDERS)
        _validate.choice("output", self.output, ("dict", "tokens"))
        check_flags(self.megatron, self.output, "the config")
        if self.unit is not None:
            _validate.choice("unit", self.unit, UNITS)
        if self.unit == "tokens":
            _check_token_unit(self.sources)
        if _validate.real("warn_epochs", self.warn_epochs) <= 0:
            raise ValueError(f"warn_epochs must be > 0, got {self.warn_epochs!r}")
        last = self.num_steps - 1
        for i, phase in enumerate(self.mixture.phases):  # the mixture checks the rest
            if phase.end_step > last:
                raise ValueError(
                    f"phases[{i}] ends at step {phase.end_step}, after the run's last step "
                    f"{last} (num_steps = {self.num_steps}): the anneal would never complete; "
                    f"end it by step {last} or raise num_steps"
                )
        for spec in self.sources:
            if spec.path is not None:  # what the files' format allows, before any is read
                check_options(spec.format, eos_id=spec.eos_id, pack=spec.pack is not False,
                              output=self.output, name=f"sources.{spec.name}")  # fmt: skip
        names = tuple(s.name for s in self.sources)
        _validate.corpora(self.corpora, names, "tokens" if self.counts_tokens else self.mode)
        if self.counts_tokens and self.mode != "exact":
            raise ValueError(
                f'unit = "tokens" over unpacked sources plans by tokens, exactly; mode = '
                f'{self.mode!r} draws samples at random: give mode = "exact" or unit = "samples"'
            )

    @property
    def mixture(self) -> Mixture:
        """The weights the fields describe."""
        return Mixture(weights={s.name: s.weight for s in self.sources}, phases=self.phases)

    @property
    def weight_unit(self) -> str:
        """``unit``, or what it defaults to for these sources."""
        if self.unit is not None:
            return self.unit
        seq_lens = {s.seq_len for s in self.sources}
        one = len(seq_lens) == 1 and all(s.windows for s in self.sources)
        return "tokens" if one else "samples"

    @property
    def counts_tokens(self) -> bool:
        """Whether the plan counts each sample's tokens (mode ``"tokens"``): weights in
        tokens over sources whose samples vary in length (unpacked documents). Where
        every sample is a window of one ``seq_len``, sample shares are token shares."""
        return self.weight_unit == "tokens" and not all(s.windows for s in self.sources)

    def spec(self, name: str) -> SourceSpec:
        """The named source's spec."""
        names = [s.name for s in self.sources]
        return self.sources[names.index(_validate.choice("source", name, names))]

    def open(self, *, check_budget: bool = True):
        """Open every source's files, each once, and build the plan: an
        ``annealmix.opened.Opened`` (sources, plan). A missing file is refused
        naming every missing path; with ``check_budget``, so is a source the plan
        would read more than its ``max_epochs`` times (see ``annealmix.opened``)."""
        from .opened import open_config

        return open_config(self, check_budget=check_budget)


def _check_token_unit(sources: tuple[SourceSpec, ...]) -> None:
    """``unit = "tokens"``: every source has the one ``seq_len`` a batch tensor needs;
    unpacked sources also their files (their documents' lengths plan the mix)."""
    for s in sources:
        if s.seq_len is None:
            raise ValueError(
                f'unit = "tokens" but sources.{s.name} has no seq_len: give every source its '
                'seq_len, or unit = "samples"'
            )
        if s.pack is False and s.path is None:
            raise ValueError(
                f'unit = "tokens" but sources.{s.name} is unpacked (pack = false) and has no '
                "path: token weights over documents need their lengths; give its files, "
                'or unit = "samples"'
            )
    seq_lens = {s.name: s.seq_len for s in sources}
    if len(set(seq_lens.values())) > 1:
        raise ValueError(
            f'unit = "tokens" needs one seq_len for every source (a batch is one tensor), got '
            f"{seq_lens}; give them one seq_len"
        )


def _source(name: str, table: dict[str, Any]) -> SourceSpec:
    _check_keys(f"sources.{name}", table, _SOURCE)
    if "weight" not in table:
        raise ValueError(f"sources.{name} lacks 'weight' (its starting weight, e.g. weight = 0.5)")
    if "path" in table and "size" in table:
        raise ValueError(
            f"sources.{name} has both 'path' and 'size'; the size comes from the files"
        )
    path = table.get("path")
    if path is not None and not (
        isinstance(path, str)
        or (isinstance(path, list) and path and all(isinstance(p, str) for p in path))
    ):
        raise ValueError(
            f"sources.{name} path must be a file, a glob or a list of them (strings), got {path!r}"
        )
    if path is not None:
        for key in ("format", "seq_len"):
            if key not in table:
                raise ValueError(f"sources.{name} has a path but no {key!r}")
    else:
        for key in ("format", "dtype", "vocab_size", "eos_id", "truncate"):
            if key in table:
                raise ValueError(f"sources.{name} has {key!r} but no path to read")
    for key in ("pack", "truncate"):
        if key in table and not isinstance(table[key], bool):
            raise ValueError(f"sources.{name} {key} must be true or false, got {table[key]!r}")
    if table.get("truncate") and table.get("pack", True):
        raise ValueError(
            f"sources.{name} has truncate = true but is packed (pack = true, the default): "
            "packing cuts documents into windows and truncates nothing; remove truncate, or "
            "give pack = false"
        )
    if table.get("eos_id") is not None:
        _validate.integer(f"sources.{name} eos_id", table["eos_id"], minimum=0)
    size = table.get("size")
    if size is not None:
        size = _validate.integer(f"sources.{name} size", size, minimum=1)
    max_epochs = table.get("max_epochs")
    if max_epochs is not None:
        max_epochs = _validate.real(f"sources.{name} max_epochs", max_epochs)
        if max_epochs <= 0:
            raise ValueError(f"sources.{name} max_epochs must be > 0, got {max_epochs!r}")
        if size is None and path is None:
            raise ValueError(f"sources.{name} has max_epochs but no size or path to count it by")
    for key in ("seq_len", "vocab_size"):
        if table.get(key) is not None:
            _validate.integer(f"sources.{name} {key}", table[key], minimum=1)
    spec = SourceSpec(
        name=name,
        weight=table["weight"],
        size=size,
        order=table.get("order"),
        max_epochs=max_epochs,
        path=path,
        format=table.get("format"),
        dtype=table.get("dtype"),
        seq_len=table.get("seq_len"),
        vocab_size=table.get("vocab_size"),
        eos_id=table.get("eos_id"),
        pack=table.get("pack"),
        truncate=table.get("truncate"),
    )
    return spec


def load_config(path: str | Path) -> MixConfig:
    """Read and validate a TOML mixture config; errors name the key and the fix."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config {str(path)!r} is a folder; give the TOML file inside it")
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    return config_from_dict(raw, where=str(path), base=path.parent)


def config_from_dict(
    raw: dict[str, Any], *, where: str = "the config", base: Path = Path(".")
) -> MixConfig:
    """A ``MixConfig`` from the parsed TOML (paths relative to ``base``)."""
    _check_keys("the config", raw, _TOP)
    raw = expand(raw, base)  # [lists]: their files as sources, corpora and phase weights
    for key in ("global_batch_size", "num_steps", "sources"):
        if key not in raw:
            raise ValueError(f"config {where!r} lacks {key!r}")
    sources = raw["sources"]
    _check_keys("sources", sources, tuple(sources) if isinstance(sources, dict) else ())
    output = raw.get("output", "tokens")
    _validate.choice("output", output, ("dict", "tokens"))
    specs = tuple(_source(name, table) for name, table in sources.items())
    sized = [s for s in specs if s.size is not None or s.path is not None]
    if sized and len(sized) != len(specs):
        lacking = next(s.name for s in specs if s.size is None and s.path is None)
        raise ValueError(f"sources.{lacking} lacks 'size' or 'path'; give every source one or none")
    phases = []
    for i, table in enumerate(raw.get("phases", [])):
        _check_keys(f"phases[{i}]", table, _PHASE)
        phases.append(Phase(**table))
    return MixConfig(
        global_batch_size=raw["global_batch_size"],
        num_steps=raw["num_steps"],
        rampup_batch_size=raw.get("rampup_batch_size"),
        batch_sizes=raw.get("batch_sizes"),
        sources=specs,
        phases=tuple(phases),
        seed=raw.get("seed", 0),
        mode=raw.get("mode", "exact"),
        order=raw.get("order", "shuffle"),
        warn_epochs=raw.get("warn_epochs", 4.0),
        unit=raw.get("unit"),
        output=output,
        **{flag: raw[flag] for flag in MEGATRON_FLAGS if flag in raw},
        corpora=raw.get("corpora"),
        base=base,
    )


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} to TOML")


def dump_config(config: MixConfig) -> str:
    """The config as TOML text; ``load_config`` on it gives the same plan."""
    lines = [
        f"seed = {config.seed}",
        f"global_batch_size = {config.global_batch_size}",
        f"num_steps = {config.num_steps}",
        *(f"{key} = {_value(getattr(config, key))}" for key in ("rampup_batch_size", "batch_sizes")
          if getattr(config, key) is not None),  # fmt: skip
        f"mode = {_value(config.mode)}",
        f"order = {_value(config.order)}",
        f"warn_epochs = {_value(config.warn_epochs)}",
        f"output = {_value(config.output)}",
        *(f"{flag} = {_value(on)}" for flag, on in config.megatron.items() if on),
    ]
    if config.unit is not None:
        lines.append(f"unit = {_value(config.unit)}")
    for spec in config.sources:
        lines += ["", f"[sources.{_key(spec.name)}]", f"weight = {_value(spec.weight)}"]
        if spec.path is not None:
            lines += [f"path = {_value(spec.path)}", f"format = {_value(spec.format)}"]
        elif spec.size is not None:
            lines.append(f"size = {spec.size}")
        for key in ("dtype", "seq_len", "vocab_size", "eos_id", "pack", "truncate", "order",
                    "max_epochs"):  # fmt: skip
            if getattr(spec, key) is not None:
                lines.append(f"{key} = {_value(getattr(spec, key))}")
    if config.corpora:
        lines += ["", "[corpora]"]
        lines += [f"{_key(c)} = {_value(list(names))}" for c, names in config.corpora.items()]
    for phase in config.phases:
        lines += [
            "",
            "[[phases]]",
            f"start_step = {phase.start_step}",
            f"end_step = {phase.end_step}",
            f"schedule = {_value(phase.schedule.to_dict())}",
            f"weights = {_value(dict(phase.weights))}",
        ]
    return "\n".join(lines) + "\n"


def save_config(config: MixConfig, path: str | Path) -> None:
    """Write ``dump_config(config)`` to ``path``."""
    Path(path).write_text(dump_config(config))
