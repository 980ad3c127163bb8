"""Mixture config files (TOML) <-> the dataclasses the Python API uses.

::

    seed = 0
    global_batch_size = 1024
    num_steps = 10000
    mode = "exact"              # or "random"
    replacement = false         # default order: false = "shuffle", true = "replacement"
    warn_epochs = 4             # warn when a source is read more often than this

    [sources.web]               # one table per source, in id order
    weight = 0.8                # starting weight (relative)
    size = 5_000_000            # samples, for planning without data ...
    order = "shuffle"           # or "replacement", "sequential"
    max_epochs = 1              # optional: an error if the plan needs more passes

    [sources.code]
    weight = 0.2
    path = "data/code/*.bin"    # ... or token files (a glob or a list), sized from them
    format = "nanogpt"          # "nanogpt" (flat uint16), "llmc", "npy" or "megatron"
    seq_len = 1024              # samples of seq_len + 1 tokens

    [[phases]]
    start_step = 8000
    end_step = 9999
    schedule = "cosine"         # or { name = "sigmoid", steepness = 12 }
    weights = { web = 0.3, code = 0.7 }

``load_config`` reads it into a ``MixConfig``; ``dump_config`` writes one back,
so that loading what it wrote gives the same plan (the same fingerprint).
"""

from __future__ import annotations

import json
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _validate
from .mixture import Mixture, Phase
from .order import ORDERS
from .plan import MODES, Plan

__all__ = ["MixConfig", "SourceSpec", "budget", "dump_config", "load_config", "save_config"]

_TOP = (
    "seed",
    "global_batch_size",
    "num_steps",
    "mode",
    "replacement",
    "warn_epochs",
    "sources",
    "phases",
)
_SOURCE = ("weight", "size", "order", "max_epochs", "path", "format", "dtype", "seq_len")
_PHASE = ("start_step", "end_step", "schedule", "weights")


def _check_keys(where: str, table: Any, valid: tuple[str, ...]) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {table!r}")
    for key in table:
        if key not in valid:
            _validate.choice(f"key in {where}:", key, valid)


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceSpec:
    """How a config names one source.

    Args:
        name: the source's name.
        weight: its starting weight.
        size: samples (given, or counted from ``path``); ``None`` when unknown.
        order: ``"shuffle"``, ``"replacement"`` or ``"sequential"``; ``None``: the
            config's default.
        max_epochs: the most passes the plan may make over it (``None``: no limit).
        path: token files, a glob or a list (``None``: planning by size only).
        format: the token files' format (see ``annealmix.sources.FORMATS``).
        dtype: the token type of ``nanogpt`` files (``"uint16"`` or ``"uint32"``).
        seq_len: tokens per sample, plus one target token (also counts tokens in
            ``budget`` for a source planned by size).
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


@dataclass(frozen=True, kw_only=True, slots=True)
class MixConfig:
    """A whole run's mixing set-up, as read from a config file.

    Args:
        plan: the plan (mixture, batch size, seed, mode, sizes, orders).
        num_steps: optimizer steps the run will take.
        sources: each source as the config describes it.
        replacement: the default order's kind (``True``: with replacement).
        warn_epochs: passes over a source above which ``budget`` warns.
        base: the folder relative source paths are read from (the config's).
    """

    plan: Plan
    num_steps: int
    sources: tuple[SourceSpec, ...] = field(default=())
    replacement: bool = False
    warn_epochs: float = 4.0
    base: Path = Path(".")

    def open_source(self, name: str) -> Any:
        """The named source's data, from its token files (needs ``path``)."""
        spec = next((s for s in self.sources if s.name == name), None)
        if spec is None:
            _validate.choice("source", name, [s.name for s in self.sources])
        if spec.path is None:
            raise ValueError(f"source {name!r} has no path in the config; it is planned by size")
        from .sources import open_token_source

        paths = spec.path if isinstance(spec.path, list) else [spec.path]
        paths = [p if Path(p).is_absolute() else str(self.base / p) for p in paths]
        return open_token_source(paths, spec.format, spec.seq_len, spec.dtype or "uint16")


def _source(name: str, table: dict[str, Any], base: Path) -> SourceSpec:
    _check_keys(f"sources.{name}", table, _SOURCE)
    if "weight" not in table:
        raise ValueError(f"sources.{name} lacks 'weight' (its starting weight, e.g. weight = 0.5)")
    if "path" in table and "size" in table:
        raise ValueError(
            f"sources.{name} has both 'path' and 'size'; the size comes from the files"
        )
    size = table.get("size")
    path = table.get("path")
    if path is not None:
        for key in ("format", "seq_len"):
            if key not in table:
                raise ValueError(f"sources.{name} has a path but no {key!r}")
        from .sources import open_token_source

        paths = path if isinstance(path, list) else [path]
        resolved = [str(p if Path(p).is_absolute() else base / p) for p in paths]
        dtype = table.get("dtype", "uint16")
        size = len(open_token_source(resolved, table["format"], table["seq_len"], dtype))
    elif "format" in table or "dtype" in table:
        raise ValueError(f"sources.{name} has a format or dtype but no path to read")
    max_epochs = table.get("max_epochs")
    if max_epochs is not None:
        max_epochs = _validate.real(f"sources.{name} max_epochs", max_epochs)
        if max_epochs <= 0:
            raise ValueError(f"sources.{name} max_epochs must be > 0, got {max_epochs!r}")
        if size is None:
            raise ValueError(f"sources.{name} has max_epochs but no size or path to count it by")
    return SourceSpec(
        name=name,
        weight=table["weight"],
        size=size,
        order=table.get("order"),
        max_epochs=max_epochs,
        path=path,
        format=table.get("format"),
        dtype=table.get("dtype"),
        seq_len=table.get("seq_len"),
    )


def load_config(path: str | Path) -> MixConfig:
    """Read and validate a TOML mixture config; errors name the key and the fix."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    return config_from_dict(raw, where=str(path), base=path.parent)


def config_from_dict(raw: dict[str, Any], *, where: str = "the config", base: Path = Path(".")):
    """A ``MixConfig`` from the parsed TOML (paths relative to ``base``)."""
    _check_keys("the config", raw, _TOP)
    for key in ("global_batch_size", "num_steps", "sources"):
        if key not in raw:
            raise ValueError(f"config {where!r} lacks {key!r}")
    sources = raw["sources"]
    _check_keys("sources", sources, tuple(sources) if isinstance(sources, dict) else ())
    specs = tuple(_source(name, table, base) for name, table in sources.items())
    sized = [s for s in specs if s.size is not None]
    if sized and len(sized) != len(specs):
        lacking = next(s.name for s in specs if s.size is None)
        raise ValueError(f"sources.{lacking} lacks 'size' or 'path'; give every source one or none")
    replacement = raw.get("replacement", False)
    if not isinstance(replacement, bool):
        raise ValueError(f"replacement must be true or false, got {replacement!r}")
    default = "replacement" if replacement else "shuffle"
    phases = []
    for i, table in enumerate(raw.get("phases", [])):
        _check_keys(f"phases[{i}]", table, _PHASE)
        phases.append(Phase(**table))
    mixture = Mixture(weights={s.name: s.weight for s in specs}, phases=phases)
    plan = Plan(
        mixture,
        global_batch_size=raw["global_batch_size"],
        seed=raw.get("seed", 0),
        mode=_validate.choice("mode", raw.get("mode", "exact"), MODES),
        sizes={s.name: s.size for s in specs} if sized else None,
        order={s.name: _validate.choice("order", s.order or default, ORDERS) for s in specs},
    )
    warn = _validate.real("warn_epochs", raw.get("warn_epochs", 4.0))
    if warn <= 0:
        raise ValueError(f"warn_epochs must be > 0, got {warn!r}")
    num_steps = _validate.integer("num_steps", raw["num_steps"], minimum=1)
    return MixConfig(
        plan=plan,
        num_steps=num_steps,
        sources=specs,
        replacement=replacement,
        warn_epochs=warn,
        base=base,
    )


def budget(config: MixConfig) -> dict[str, dict[str, float | None]]:
    """Each source's samples, tokens and epochs by the end of training.

    Warns when a source is read more than ``warn_epochs`` times; raises when a
    source with ``max_epochs`` cannot supply its share within that many passes.
    """
    plan = config.plan
    consumed = plan.consumed(config.num_steps)
    out = {}
    for k, spec in enumerate(config.sources or ()):
        samples = int(consumed[k])
        epochs = None if plan.sizes is None else samples / plan.sizes[k]
        tokens = None if spec.seq_len is None else samples * spec.seq_len
        out[spec.name] = {"samples": samples, "tokens": tokens, "epochs": epochs}
        if epochs is None:
            continue
        if spec.max_epochs is not None and epochs > spec.max_epochs:
            raise ValueError(
                f"source {spec.name!r} cannot supply its share: the plan takes {samples:,} "
                f"samples, {epochs:.3g} passes over its {plan.sizes[k]:,}, above its "
                f"max_epochs = {spec.max_epochs:g}; give it more data, a lower weight, "
                "or fewer steps"
            )
        if epochs > config.warn_epochs:
            warnings.warn(
                f"source {spec.name!r} is read {epochs:.3g} times (warn_epochs = "
                f"{config.warn_epochs:g}); repeated data loses value after a few epochs",
                stacklevel=2,
            )
    return out


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
    plan = config.plan
    lines = [
        f"seed = {plan.seed}",
        f"global_batch_size = {plan.global_batch_size}",
        f"num_steps = {config.num_steps}",
        f"mode = {_value(plan.mode)}",
        f"replacement = {_value(config.replacement)}",
        f"warn_epochs = {_value(config.warn_epochs)}",
    ]
    specs = config.sources or tuple(
        SourceSpec(name=n, weight=w, order=o)
        for (n, w), o in zip(plan.mixture.weights.items(), plan.orders)
    )
    for k, spec in enumerate(specs):
        lines += ["", f"[sources.{_key(spec.name)}]", f"weight = {_value(spec.weight)}"]
        if spec.path is not None:
            lines += [f"path = {_value(spec.path)}", f"format = {_value(spec.format)}"]
            if spec.dtype is not None:
                lines.append(f"dtype = {_value(spec.dtype)}")
        elif plan.sizes is not None:
            lines.append(f"size = {plan.sizes[k]}")
        if spec.seq_len is not None:
            lines.append(f"seq_len = {spec.seq_len}")
        if spec.order is not None:
            lines.append(f"order = {_value(spec.order)}")
        if spec.max_epochs is not None:
            lines.append(f"max_epochs = {_value(spec.max_epochs)}")
    for phase in plan.mixture.phases:
        schedule = phase.schedule.to_dict()
        lines += [
            "",
            "[[phases]]",
            f"start_step = {phase.start_step}",
            f"end_step = {phase.end_step}",
            f"schedule = {_value(schedule)}",
            f"weights = {_value(dict(phase.weights))}",
        ]
    return "\n".join(lines) + "\n"


def save_config(config: MixConfig, path: str | Path) -> None:
    """Write ``dump_config(config)`` to ``path``."""
    Path(path).write_text(dump_config(config))
