"""Counter-based randomness: every random choice is a pure function of keys.

``mix64`` is SplitMix64's finaliser, a bijection on 64-bit words with full
avalanche; hashing (key, counter) through it twice gives a fast counter-based
generator (SplitMix64 is one). No state, so any position can be drawn directly.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (returns a new array)."""
    x = np.asarray(x, dtype=np.uint64)
    x = x ^ (x >> np.uint64(30))
    x *= M1
    x ^= x >> np.uint64(27)
    x *= M2
    x ^= x >> np.uint64(31)
    return x


def mix64_one(x: np.uint64) -> np.uint64:
    """``mix64`` of one uint64 word (the compiled shuffle's; wraps as uint64 does)."""
    x ^= x >> np.uint64(30)
    x *= M1
    x ^= x >> np.uint64(27)
    x *= M2
    return x ^ (x >> np.uint64(31))


def _mix64_int(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def key(*parts: int) -> int:
    """Derive a 64-bit key from integers (seed, purpose, source id, ...)."""
    h = 0x243F6A8885A308D3
    for part in parts:
        h = _mix64_int((h + (int(part) & _MASK64) * 0x9E3779B97F4A7C15) & _MASK64)
    return h


def extend(k: int | np.ndarray, part: int | np.ndarray) -> np.ndarray:
    """``key(*prefix, part)`` given ``k = key(*prefix)``, elementwise over arrays."""
    with np.errstate(over="ignore"):  # 0-d arrays warn on the intended wrap-around
        h = np.asarray(k, dtype=np.uint64) + np.asarray(part).astype(np.uint64) * GOLDEN
        return mix64(h)


def hash_counter(k: int | np.ndarray, counter: np.ndarray) -> np.ndarray:
    """64 random bits for each counter under key ``k`` (array keys broadcast)."""
    c = np.asarray(counter).astype(np.uint64)
    return mix64(mix64(c * GOLDEN ^ np.asarray(k, dtype=np.uint64)) + GOLDEN)
