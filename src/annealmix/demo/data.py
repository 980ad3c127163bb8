"""The demo's domains, as byte tokens (vocabulary 256): two text domains that ship
with Python itself, and a generated one that differs from both.

- ``code``: the standard library's own top-level ``.py`` files, in sorted order;
- ``prose``: the English reference-manual text in ``pydoc_data.topics``, by topic name;
- ``math``: generated arithmetic, one exercise a line (``417 + 86 = 503``, sums,
  differences and products of numbers below 1000, from a fixed seed): digits and
  operators with a structure a model can learn exactly, far from both text domains.

Each domain is split once, deterministically: the last ``held_out`` fraction of its
bytes is kept for evaluation and never sampled for training.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

from .. import _validate

__all__ = ["DOMAINS", "domain_bytes", "split"]

DOMAINS = ("code", "prose", "math")
_MATH_BYTES = 1 << 22  # generated once per call, cut to max_bytes


def _code() -> bytes:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))
    if not files:
        raise RuntimeError(f"no .py files under the standard library at {stdlib}")
    return b"\n".join(f.read_bytes() for f in files)


def _prose() -> bytes:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics)).encode("utf-8")


def _math(size: int) -> bytes:
    rng = np.random.default_rng(0x3A7)
    lines, total = [], 0
    while total < size:
        a, b = rng.integers(0, 1000, 4096), rng.integers(0, 1000, 4096)
        ops = rng.integers(0, 3, 4096)
        for x, y, op in zip(a.tolist(), b.tolist(), ops.tolist()):
            sign, value = ("+", x + y) if op == 0 else ("-", x - y) if op == 1 else ("*", x * y)
            line = f"{x} {sign} {y} = {value}\n"
            lines.append(line)
            total += len(line)
    return "".join(lines).encode("ascii")


def domain_bytes(domain: str, max_bytes: int | None = None) -> np.ndarray:
    """The domain's bytes as a uint8 array, at most ``max_bytes`` of them."""
    domain = _validate.choice("domain", domain, DOMAINS)
    if domain == "math":
        raw = _math(min(max_bytes or _MATH_BYTES, _MATH_BYTES))
    else:
        raw = _code() if domain == "code" else _prose()
    if max_bytes is not None:
        raw = raw[: _validate.integer("max_bytes", max_bytes, minimum=1)]
    return np.frombuffer(raw, dtype=np.uint8)


def split(tokens: np.ndarray, held_out: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out): the held-out part is the last ``held_out`` fraction."""
    held_out = _validate.unit_interval("held_out", held_out)
    cut = int(round(tokens.size * (1.0 - held_out)))
    return tokens[:cut], tokens[cut:]
