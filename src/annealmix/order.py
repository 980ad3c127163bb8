"""Within-source order: a draw number -> a sample index inside the source.

The n-th draw from a source of ``size`` samples maps to an index by one of:

- ``"shuffle"`` (default): without replacement. Epoch ``n // size`` is a fresh
  keyed pseudo-random permutation of ``range(size)``. A source of up to 128 samples
  sorts keyed hashes of its indices (a uniform permutation: ties, below
  ``size**2 / 2**65``, go by index); a larger one is evaluated per index by an
  eight-round Feistel network with cycle walking: O(1) time and memory per draw, so
  a source of 10^10 samples costs no more memory than one of 10. (Four rounds of a
  one-multiply round function, as before algorithm version 2, left small sources
  visibly biased; ``tests/test_order.py`` runs chi-square tests of position and
  pair frequencies at every size from 2 to 64 and at nine from 65 to 257, and of
  positions at 1,000.)
- ``"replacement"``: uniform with replacement, a keyed hash of the draw number.
- ``"sequential"``: ``n % size``, in file order, epoch after epoch.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from . import _compiled, _hash, _validate

__all__ = ["ORDERS", "indexed", "range_indices", "sample_indices", "shuffle_key", "shuffled"]
# Within-source orders a plan names per source.
ORDERS = ("replacement", "sequential", "shuffle")
_CHUNK = 1 << 15
# A source with at least this many positions in a call is mapped as one run (keys
# derived once); below it, per position with gathered keys (cost flat in sources).
_RUN = 8192
_ROUNDS = 8  # a PRP on small domains too (four rounds only asymptotically)
_EXACT_BITS = 7  # permutations of at most 2**7 indices sort keyed hashes instead


def _feistel(x: np.ndarray, keys: list[np.ndarray], lo_bits: int, hi_bits: int) -> np.ndarray:
    """One pass of an unbalanced Feistel network on [0, 2**(lo_bits + hi_bits)).

    The value is (L, R) with R the low bits; each round maps (L, R) -> (R, L + F(R))
    and the widths swap, so an even number of rounds lands back on the same layout.
    F is R xor the round key through two multiply-xorshift steps, of which the top
    bits are kept (they depend on every input bit); a key is one word or one word
    per element.
    """
    one = np.uint64(1)
    a, b = np.asarray(hi_bits, dtype=np.uint64), np.asarray(lo_bits, dtype=np.uint64)
    f = np.empty_like(x)
    for r in range(_ROUNDS):
        right = x & ((one << b) - one)
        x >>= b  # x is now L
        np.bitwise_xor(right, keys[r], out=f)
        f *= _hash.M1
        f ^= f >> np.uint64(31)
        f *= _hash.M2
        f >>= np.uint64(64) - a
        x += f
        x &= (one << a) - one
        right <<= a
        x |= right
        a, b = b, a
    return x


def _round_keys(epoch_keys: int | np.ndarray) -> list[np.ndarray]:
    """The Feistel round keys of an epoch key (one, or one per element)."""
    return [_hash.extend(_hash.extend(_hash.key(), epoch_keys), r) for r in range(_ROUNDS)]


def _permute(
    size: int | np.ndarray, epoch_keys: int | np.ndarray, x: np.ndarray,
    bits: int | np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """The keyed permutation of range(size) at positions ``x`` (uint64, permuted in place).

    ``epoch_keys`` is one key for all positions or one per position; ``size`` one
    size or one per position, ``bits`` its width (``max(2, (size - 1).bit_length())``):
    one, or one per position above ``_EXACT_BITS`` (widths of many sources in one
    pass).
    """
    if bits is None:
        bits = max(2, (int(size) - 1).bit_length())
    if np.ndim(bits) == 0 and bits <= _EXACT_BITS:
        x[:] = _sorted_hashes(size, epoch_keys, x)
        return x
    bits = np.asarray(bits, dtype=np.uint64)
    lo_bits, hi_bits = bits - bits // np.uint64(2), bits // np.uint64(2)
    keys = _round_keys(epoch_keys)
    x = _feistel(x, keys, lo_bits, hi_bits)
    # Cycle walking: re-apply until the value falls inside [0, size); the domain is
    # under 2 * size, so on average fewer than two passes.
    limit = np.asarray(size, dtype=np.uint64)
    todo = np.flatnonzero(x >= limit)
    while todo.size:
        sub = [k if k.ndim == 0 else k[todo] for k in keys]
        lo, hi = (lo_bits, hi_bits) if bits.ndim == 0 else (lo_bits[todo], hi_bits[todo])
        x[todo] = _feistel(x[todo], sub, lo, hi)
        todo = todo[x[todo] >= (limit if limit.ndim == 0 else limit[todo])]
    return x


def _sorted_hashes(
    size: int | np.ndarray, epoch_keys: int | np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Place ``x`` of each epoch's permutation that sorts ``hash(epoch key, i)`` over
    ``i < size``: uniform over all permutations but for hash ties (broken by index).

    Each distinct (epoch key, size) is sorted once (one row of at most
    ``2**_EXACT_BITS`` hashes; the places past its size sort last) and its row kept
    in a bounded cache: thousands of small sources each drawn a few times a step
    reuse their epoch's row. (Sources of one key and other sizes, say two named
    alike, have rows of their own.)
    """
    keys, sizes, _ = np.broadcast_arrays(
        np.asarray(epoch_keys, dtype=np.uint64), np.asarray(size, dtype=np.int64), x
    )
    keys, sizes = keys.ravel(), sizes.ravel()
    pairs = keys ^ _hash.mix64(sizes.astype(np.uint64))  # one word per (key, size)
    _, first, which = np.unique(pairs, return_index=True, return_inverse=True)
    distinct, own = keys.take(first), sizes.take(first)
    if not (np.array_equal(distinct.take(which), keys) and np.array_equal(own.take(which), sizes)):
        raise RuntimeError("two sources' epoch keys collide; please report this seed")
    rows = [_rows.get(key) for key in zip(distinct.tolist(), own.tolist())]
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        new, lengths = distinct.take(missing), own.take(missing)
        index = np.arange(int(lengths.max()), dtype=np.uint64)
        hashes = _hash.hash_counter(new[:, None], index[None, :])
        hashes[index[None, :] >= lengths[:, None].astype(np.uint64)] = np.iinfo(np.uint64).max
        ranked = hashes.argsort(axis=1, kind="stable").astype(np.uint8)
        if len(_rows) + len(missing) > _ROWS_KEPT:
            _rows.clear()
        for i, key, z, row in zip(missing, new.tolist(), lengths.tolist(), ranked):
            rows[i] = _rows[key, z] = row[:z].copy()
    starts = np.cumsum(own) - own  # each row's place in the rows laid end to end
    flat = np.concatenate(rows)
    return flat.take(starts.take(which) + x.ravel().astype(np.intp)).reshape(x.shape).astype(
        np.uint64
    )


_rows: dict[tuple[int, int], np.ndarray] = {}  # (epoch key, size) -> its permutation
_ROWS_KEPT = 1 << 15  # at most 4 MB of rows (uint8, up to 2**_EXACT_BITS each)


def _shuffle(size: int, source_key: int, draws: np.ndarray) -> np.ndarray:
    """Sample indices of draw numbers (uint64) from a shuffled source, in place."""
    if size == 1:
        draws[:] = 0
        return draws
    first, last = int(draws.min()) // size, int(draws.max()) // size
    if first == last:  # one epoch: one key for all
        draws -= np.uint64(first * size)
        return _permute(size, _hash.key(source_key, first), draws)
    epochs = draws // np.uint64(size)
    draws -= epochs * np.uint64(size)
    return _permute(size, _hash.extend(_hash.key(source_key), epochs), draws)


def _source_key(seed: int, source_id: int) -> int:
    return _hash.key(seed, 0x5EED, source_id)


def _check(order: str, size: int) -> tuple[str, int]:
    return _validate.choice("order", order, ORDERS), _validate.integer(
        "source size", size, minimum=1
    )


def sample_indices(
    order: str, draws: np.ndarray, *, size: int, seed: int, source_id: int
) -> np.ndarray:
    """Sample indices in ``[0, size)`` for an array of draw numbers of one source."""
    order, size = _check(order, size)
    draws = np.asarray(draws, dtype=np.int64)
    if order == "sequential":
        return draws % size
    source_key = _source_key(seed, source_id)
    if order == "replacement":
        return _uniform(source_key, draws, size)
    out = np.empty(draws.shape, dtype=np.uint64)
    flat = draws.ravel()
    for a in range(0, flat.size, _CHUNK):
        out.flat[a : a + _CHUNK] = _shuffle(
            size, source_key, flat[a : a + _CHUNK].astype(np.uint64)
        )
    return out.view(np.int64)


def range_indices(
    order: str, start: int, out: np.ndarray, *, size: int, seed: int, source_id: int
) -> np.ndarray:
    """Sample indices of draws ``start, start + 1, ...`` of one source, written into ``out``.

    The same values as ``sample_indices`` on ``np.arange(start, start + out.size)``,
    without building the draws: the plan's draws of a source over a range of steps
    are always such a run.
    """
    order, size = _check(order, size)
    source_key = _source_key(seed, source_id)
    for a in range(0, out.size, _CHUNK):
        draws = np.arange(start + a, start + min(out.size, a + _CHUNK), dtype=np.uint64)
        if order == "sequential":
            draws %= np.uint64(size)
        elif order == "replacement":
            draws = _uniform(source_key, draws, size)
        else:
            draws = _shuffle(size, source_key, draws)
        out[a : a + draws.size] = draws
    return out


def _uniform(source_key: int | np.ndarray, draws: np.ndarray, size: int | np.ndarray) -> np.ndarray:
    bits = _hash.hash_counter(source_key, draws) >> np.uint64(11)
    return np.floor(bits * (np.asarray(size, dtype=np.float64) / 2.0**53)).astype(np.int64)


def indexed(plan, batch, spans: np.ndarray | None = None):
    """``batch`` (an ``annealmix.batch.Batch`` planned by ``plan``, an
    ``annealmix.Plan``) with each position's sample index filled in.

    A source's draws over the steps held are one run ``first, first + 1, ...``
    (``batch.first_draws``). A source with a long run there is mapped as a run, with
    its keys derived once (``range_indices``); the positions of all other sources are
    mapped together, each with its own source's size and round keys gathered from
    per-source tables, so that the cost of a call does not grow with the number of
    sources (grouped by order and permutation width; only positions of a source that
    wraps an epoch derive keys of their own). The same values as ``sample_indices``
    per source. Needs the plan's sizes.

    ``spans``: per source, how many draws from ``first_draws`` on the batch's draws
    lie within; by default the batch's own count (its draws are the whole run). Some
    positions of a batch (one rank's) pass the whole batch's counts.
    """
    if plan.sizes is None:
        raise ValueError("sample indices need source sizes: build the Plan with sizes=")
    n = plan.num_sources
    sources = batch.sources.ravel().astype(np.intp)
    draws = batch.draws.ravel()
    first = np.asarray(batch.first_draws, dtype=np.int64)
    totals = np.bincount(sources, minlength=n)
    spans = totals if spans is None else np.asarray(spans, dtype=np.int64)
    out = np.empty(draws.size, dtype=np.int64)
    runs = totals >= _RUN
    if runs.all():
        rest = np.zeros(0, dtype=np.intp)
    elif not runs.any():
        rest = np.arange(draws.size)
    else:
        rest = np.flatnonzero(~runs.take(sources))
    if runs.any():
        # Each long run mapped in one go into a shared buffer, then gathered.
        long = runs.take(sources) if rest.size else slice(None)
        kept = np.where(runs, spans, 0)
        buffer = np.empty(int(kept.sum()), dtype=np.int64)
        shift = np.cumsum(kept) - kept - first  # buffer slot of draw d of source k: d + shift[k]
        for k in np.flatnonzero(runs).tolist():
            run = buffer[shift[k] + first[k] : shift[k] + first[k] + spans[k]]
            order, size = plan.orders[k], plan.sizes[k]
            range_indices(order, int(first[k]), run, size=size, seed=plan.seed, source_id=k)
        at = np.flatnonzero(long) if rest.size else slice(None)
        out[at] = buffer.take(shift.take(sources[at]) + draws[at])
    if rest.size:
        out[rest] = _positions(plan, sources.take(rest), draws.take(rest), first, spans)
    return dataclasses.replace(batch, indices=out.reshape(batch.draws.shape))


def _positions(
    plan, sources: np.ndarray, draws: np.ndarray, first: np.ndarray, totals: np.ndarray
) -> np.ndarray:
    """Sample indices of positions of many sources at once (see ``indexed``)."""
    sizes, source_keys, base, kinds, kind_of, widths = _tables(plan)
    # Per source: the epoch its draws start in here, and whether they end in it too.
    first, totals = first.astype(np.uint64), totals.astype(np.uint64)
    epoch = first // sizes
    wraps = (first + np.maximum(totals, 1) - np.uint64(1)) // sizes != epoch
    # key(source key, epoch), as sample_indices derives it
    epoch_keys = _hash.extend(base, epoch)
    which = kind_of.take(sources) if len(kinds) > 1 else None
    out = np.empty(draws.size, dtype=np.int64)
    for g, (order, bits) in enumerate(kinds):
        where = np.arange(draws.size) if which is None else np.flatnonzero(which == g)
        for a in range(0, where.size, _CHUNK):
            at = where[a : a + _CHUNK]
            src = sources.take(at)
            d = draws.take(at).astype(np.uint64)
            size = sizes.take(src)
            if order == "replacement":
                out[at] = _uniform(source_keys.take(src), d, size)
                continue
            e = epoch.take(src)
            wrapping = np.flatnonzero(wraps.take(src)) if wraps.any() else ()
            if len(wrapping):
                e[wrapping] = d[wrapping] // size[wrapping]
            d -= e * size  # the draw's place within its epoch
            if order == "sequential":
                out[at] = d
                continue
            keys = epoch_keys.take(src)  # (round) keys of the sources here only
            if len(wrapping):
                keys[wrapping] = _hash.extend(base.take(src[wrapping]), e[wrapping])
            out[at] = _scramble(d, keys, size, widths.take(src), bits <= _EXACT_BITS)
    return out


def _scramble(
    x: np.ndarray, keys: np.ndarray, sizes: np.ndarray, widths: np.ndarray, exact: bool
) -> np.ndarray:
    """Places ``x`` (uint64, each within its epoch) through the permutations of their
    epoch keys: sorted hashes (``exact``: every size at most ``2**_EXACT_BITS``), or
    the Feistel network at each element's width (compiled where numba is)."""
    if exact:
        return _sorted_hashes(sizes, keys, x)
    kernels = _compiled.kernels()
    if kernels is None:
        return _permute(sizes, keys, x, widths)
    kernels.feistel_shuffle(x, keys, sizes, widths)
    return x


def _bit_length(v: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of each uint64 (a float's exponent, one too high where the
    value rounded up to a power of two: corrected)."""
    e = np.minimum(np.frexp(v.astype(np.float64))[1], 64).astype(np.int64)
    high = (e > 0) & (v < np.left_shift(np.uint64(1), np.maximum(e - 1, 0).astype(np.uint64)))
    return e - high


def shuffle_key(seed: int, source_id: int) -> int:
    """A shuffled source's key for ``shuffled``."""
    return _hash.key(_source_key(seed, source_id))


def shuffled(sizes: np.ndarray, keys: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Sample indices of draws of many shuffled sources at once: per draw, its
    source's size and key (``shuffle_key``). The values ``sample_indices("shuffle",
    ...)`` gives source by source, in a few passes whatever the number of sources
    (sorted hashes for the small ones, the Feistel network over every width at once
    for the others)."""
    sizes = np.asarray(sizes, dtype=np.uint64)
    x = np.asarray(draws, dtype=np.int64).astype(np.uint64)
    epochs = x // sizes
    x -= epochs * sizes
    keys = _hash.extend(keys, epochs)
    widths = np.maximum(_bit_length(sizes - np.uint64(1)), 2).astype(np.uint64)
    out = np.empty(x.shape, dtype=np.int64)
    exact = widths <= np.uint64(_EXACT_BITS)
    for group in (np.flatnonzero(exact), np.flatnonzero(~exact)):
        if group.size:
            part = _scramble(x.take(group), keys.take(group), sizes.take(group),
                             widths.take(group), bool(exact[group[0]]))  # fmt: skip
            out[group] = part
    return out


def _feistel_shuffle(x: np.ndarray, keys: np.ndarray, sizes: np.ndarray, bits: np.ndarray) -> None:
    """``_permute`` above ``_EXACT_BITS``, element by element, in place: the round keys
    of each epoch key, the Feistel network, cycle walking (its compiled twin)."""
    one, round_keys = np.uint64(1), np.empty(_ROUNDS, dtype=np.uint64)
    for i in range(x.shape[0]):
        first = _mix_one(_START + keys[i] * _GOLD)  # _round_keys, one key at a time
        for r in range(_ROUNDS):
            round_keys[r] = _mix_one(first + np.uint64(r) * _GOLD)
        value, lo = x[i], bits[i] - bits[i] // np.uint64(2)
        hi = bits[i] // np.uint64(2)
        while True:
            a, b = hi, lo
            for r in range(_ROUNDS):
                right = value & ((one << b) - one)
                value >>= b
                f = (right ^ round_keys[r]) * _M1
                f ^= f >> np.uint64(31)
                f = (f * _M2) >> (np.uint64(64) - a)
                value = ((value + f) & ((one << a) - one)) | (right << a)
                a, b = b, a
            if value < sizes[i]:
                break
        x[i] = value


# The compiled shuffle's constants and mixer (numba freezes module globals).
_mix_one, _START, _GOLD = _hash.mix64_one, np.uint64(_hash.key()), _hash.GOLDEN
_M1, _M2 = _hash.M1, _hash.M2


@_compiled.register
def build(jit) -> dict:
    """The compiled twin of the wide shuffles (``_compiled.kernels``)."""
    global _mix_one
    _mix_one = jit(_mix_one)
    return {"feistel_shuffle": jit(_feistel_shuffle)}


@functools.lru_cache(maxsize=8)
def _tables(plan) -> tuple:
    """What ``_positions`` needs of a plan's sources, derived once per plan: sizes,
    source keys (``_source_key`` of every id), ``key(source key)``, the groups (one
    order; shuffles in two: sorted hashes, and the Feistel network, each over every
    width at once), each source's group and its permutation width."""
    n = plan.num_sources
    # _source_key(seed, k) for every k at once: key(seed, 0x5EED, k) extends key(seed, 0x5EED)
    source_keys = _hash.extend(_hash.key(plan.seed, 0x5EED), np.arange(n))
    base = _hash.extend(np.uint64(_hash.key()), source_keys)  # key(source key)
    widths = [max(2, (z - 1).bit_length()) for z in plan.sizes]
    kind = [(o, (_EXACT_BITS + (w > _EXACT_BITS)) * (o == "shuffle"))
            for o, w in zip(plan.orders, widths)]  # fmt: skip
    kinds = sorted(set(kind))
    number = {k: i for i, k in enumerate(kinds)}
    kind_of = np.array([number[k] for k in kind], dtype=np.intp)
    return (np.array(plan.sizes, dtype=np.uint64), source_keys, base, kinds, kind_of,
            np.array(widths, dtype=np.uint64))  # fmt: skip
