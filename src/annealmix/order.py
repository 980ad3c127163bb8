"""Within-source order: a draw number -> a sample index inside the source.

The n-th draw from a source of ``size`` samples maps to an index by one of:

- ``"shuffle"`` (default): without replacement. Epoch ``n // size`` is a fresh
  keyed pseudo-random permutation of ``range(size)``, evaluated per index by a
  Feistel network with cycle walking: O(1) time and memory per draw, so a source of
  10^10 samples costs no more memory than one of 10.
- ``"replacement"``: uniform with replacement, a keyed hash of the draw number.
- ``"sequential"``: ``n % size``, in file order, epoch after epoch.
"""

from __future__ import annotations

import numpy as np

from . import _hash, _validate

__all__ = ["ORDERS", "sample_indices"]

ORDERS = ("replacement", "sequential", "shuffle")
_CHUNK = 1 << 15
_MUL = np.uint64(0xD6E8FEB86659FD93)
_ROUNDS = 4  # Luby-Rackoff: four rounds of a keyed round function give a strong PRP.


def _feistel(x: np.ndarray, keys: list[np.uint64], lo_bits: int, hi_bits: int) -> np.ndarray:
    """One pass of an unbalanced Feistel network on [0, 2**(lo_bits + hi_bits)).

    The value is (L, R) with R the low bits; each round maps (L, R) -> (R, L + F(R))
    and the widths swap, so an even number of rounds lands back on the same layout.
    F is one multiply and a fold of the high half into the low bits, keyed per round.
    """
    a, b = hi_bits, lo_bits
    f = np.empty_like(x)
    for r in range(_ROUNDS):
        right = x & np.uint64((1 << b) - 1)
        x >>= np.uint64(b)  # x is now L
        np.bitwise_xor(right, keys[r], out=f)
        f *= _MUL
        f ^= f >> np.uint64(32)
        x += f
        x &= np.uint64((1 << a) - 1)
        right <<= np.uint64(a)
        x |= right
        a, b = b, a
    return x


def _permute(size: int, epoch_key: int, i: np.ndarray) -> np.ndarray:
    """The keyed permutation of range(size) at positions ``i``, in cache-sized chunks."""
    bits = max(2, (size - 1).bit_length())
    lo_bits, hi_bits = bits - bits // 2, bits // 2
    keys = [np.uint64(_hash.key(epoch_key, r)) for r in range(_ROUNDS)]
    out = np.empty(i.shape, dtype=np.uint64)
    for a in range(0, i.size, _CHUNK):
        x = _feistel(i[a : a + _CHUNK].astype(np.uint64), keys, lo_bits, hi_bits)
        # Cycle walking: re-apply until the value falls inside [0, size); the domain
        # is under 2 * size, so on average fewer than two passes.
        todo = np.flatnonzero(x >= np.uint64(size))
        while todo.size:
            x[todo] = _feistel(x[todo], keys, lo_bits, hi_bits)
            todo = todo[x[todo] >= np.uint64(size)]
        out[a : a + _CHUNK] = x
    return out.view(np.int64)


def sample_indices(
    order: str, draws: np.ndarray, *, size: int, seed: int, source_id: int
) -> np.ndarray:
    """Sample indices in ``[0, size)`` for an array of draw numbers of one source."""
    _validate.choice("order", order, ORDERS)
    size = _validate.integer("source size", size, minimum=1)
    draws = np.asarray(draws, dtype=np.int64)
    if order == "sequential":
        return draws % size
    source_key = _hash.key(seed, 0x5EED, source_id)
    if order == "replacement":
        bits = _hash.hash_counter(source_key, draws) >> np.uint64(11)
        return np.floor(bits * (size / 2.0**53)).astype(np.int64)
    if size == 1:
        return np.zeros_like(draws)
    first, last = int(draws.min()) // size, int(draws.max()) // size
    if first == last:
        return _permute(size, _hash.key(source_key, first), draws - first * size)
    epochs = draws // size
    within = draws - epochs * size
    # A small source spans several epochs in one call: key each epoch once.
    out = np.empty_like(draws)
    for epoch in range(first, last + 1) if last - first < 64 else np.unique(epochs).tolist():
        members = np.flatnonzero(epochs == epoch)
        if members.size:
            out[members] = _permute(size, _hash.key(source_key, epoch), within[members])
    return out
