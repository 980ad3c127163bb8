"""Shared argument checks: every message names the field, the value and the fix."""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np


def real(name: str, value: object) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)  # type: ignore[arg-type]
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def unit_interval(name: str, value: object) -> float:
    out = real(name, value)
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return out


def integer(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int (1.0 is fine, 1.5 is not), at least ``minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        out = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if out != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def choice(name: str, value: object, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``, else raise with a close match."""
    valid = sorted(valid)
    if isinstance(value, str) and value in valid:
        return value
    hint = difflib.get_close_matches(str(value), valid, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ValueError(f"unknown {name} {value!r}{did_you_mean}; valid: {', '.join(valid)}")


def per_source(
    where: str,
    values: object,
    names: Sequence[str],
    *,
    allow_missing: bool = False,
    noun: str = "value",
) -> np.ndarray:
    """Values by source name (a mapping) or one per source in order (a sequence) ->
    float64 in source order; a source left out is NaN where ``allow_missing``."""
    if isinstance(values, Mapping):
        for name in values:
            choice(f"source in {where}:", name, names)
        missing = [n for n in names if n not in values]
        if missing and not allow_missing:
            raise ValueError(f"{where} has no {noun} for {missing}; give every source a {noun}")
        raw = [values.get(n, math.nan) for n in names]
    elif isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, (str, bytes)):
        raw = list(values)
        if len(raw) != len(names):
            raise ValueError(
                f"{where} must map each of {list(names)} to a {noun} or list one per source, "
                f"got {values!r}"
            )
    else:
        raise ValueError(f"{where} must map each of {list(names)} to a {noun}, got {values!r}")
    out = []
    for name, v in zip(names, raw):  # "0.5" or True is a mistake, not a number
        try:
            if isinstance(v, (str, bytes, bool)):
                raise TypeError
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: the {noun} for source {name!r} must be a number, got {v!r}"
            ) from None
    return np.array(out, dtype=np.float64)


def sample_counts(sizes: Mapping[str, int], names: tuple[str, ...]) -> tuple[int, ...]:
    """Samples per source by name -> a tuple in ``names`` order, each >= 1."""
    if not isinstance(sizes, Mapping):
        raise TypeError(f"sizes must map source names to sample counts, got {sizes!r}")
    known = set(names)
    for name in sizes:
        if name not in known:
            choice("source in sizes:", name, names)
    missing = [n for n in names if n not in sizes]
    if missing:
        raise ValueError(
            f"sizes has no entry for source {missing[0]!r}; give every source's sample count"
        )
    out = []
    for n in names:
        size = integer(f"size of source {n!r}", sizes[n])
        if size < 1:
            raise ValueError(f"source {n!r} is empty (size {size}); remove it or give it samples")
        out.append(size)
    return tuple(out)


def token_lengths(lengths: Mapping[str, Any], names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Tokens per sample by name -> read-only int32 arrays in ``names`` order."""
    if not isinstance(lengths, Mapping):
        raise TypeError(f"lengths must map source names to arrays of tokens per sample, got "
                        f"{type(lengths).__name__}")  # fmt: skip
    known = set(names)
    for name in lengths:
        if name not in known:
            choice("source in lengths:", name, names)
    out = []
    for name in names:
        if name not in lengths:
            raise ValueError(
                f"lengths has no entry for source {name!r}; give every source its tokens per sample"
            )
        a = np.asarray(lengths[name])
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"lengths of source {name!r} must be a non-empty 1-D integer array (tokens per "
                f"sample), got shape {a.shape} and dtype {a.dtype}"
            )
        low, high = int(a.min()), int(a.max())
        if low < 1 or high >= 1 << 31:
            i = int(np.argmin(a) if low < 1 else np.argmax(a))
            raise ValueError(
                f"lengths of source {name!r}: sample {i} holds {a[i]} tokens; every sample "
                "needs at least one and fewer than 2**31 (drop empty documents)"
            )
        a = a.astype(np.int32, copy=True)  # 4 bytes per sample
        a.flags.writeable = False
        out.append(a)
    return tuple(out)


def sizes_or_lengths(mode: str, takes_lengths: bool, sizes, lengths, names: tuple[str, ...]):
    """A plan's checked sizes and lengths (a mode that counts tokens takes lengths,
    which give the sizes), and the lengths' digest: ``(sizes, lengths, digest)``."""
    if not takes_lengths:
        if lengths is not None:
            raise ValueError(f'lengths count tokens: give mode = "tokens" (or "online '
                             f'tokens"), not "{mode}"')  # fmt: skip
        return (None if sizes is None else sample_counts(sizes, names)), None, None
    if lengths is None:
        raise ValueError(f'mode = "{mode}" needs lengths={{name: tokens per sample}}')
    if sizes is not None:
        raise ValueError("give lengths or sizes, not both: the lengths give the sizes")
    arrays = token_lengths(lengths, names)
    digest = hashlib.blake2b(digest_size=8)
    for a in arrays:
        digest.update(np.int64(a.size).tobytes())
        digest.update(a.tobytes())
    return tuple(a.size for a in arrays), arrays, digest.hexdigest()


def corpora(corpora: Mapping[str, Sequence[str]] | None, names: tuple[str, ...],
             mode: str) -> Mapping[str, tuple[str, ...]] | None:  # fmt: skip
    """``corpora`` checked: each a list of sources, none in two, in source order."""
    if corpora is None or not len(corpora):
        return None
    if mode != "exact":
        raise ValueError(f'corpora= groups the counting of mode "exact"; mode "{mode}" counts '
                         "each source on its own: leave corpora out")  # fmt: skip
    if not isinstance(corpora, Mapping):
        raise TypeError(f"corpora must map corpus names to lists of source names, got "
                        f"{type(corpora).__name__}")  # fmt: skip
    ids, home, out = {n: k for k, n in enumerate(names)}, {}, {}
    for corpus, members in corpora.items():
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise TypeError(f"corpora[{corpus!r}] must be a list of source names, got {members!r}")
        for name in members:
            if name not in ids:
                choice(f"source in corpora[{corpus!r}]:", name, names)
            if name in home:
                raise ValueError(f"source {name!r} is in corpora {home[name]!r} and {corpus!r}; "
                                 "give each source one corpus")  # fmt: skip
            home[name] = corpus
        out[str(corpus)] = tuple(sorted(members, key=ids.__getitem__))
    return MappingProxyType(out)
