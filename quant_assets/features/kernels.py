"""Compiled (numba) kernels of the bar family, run over ranges of canvas rows (grid.py).

Window sums are built by doubling: the sum over 2k rows ending at t is the k-row sum at t plus the
k-row sum at t - k, and a window of n rows adds the power-of-two sums of n's binary digits, newest
first. Unlike a difference of cumulative sums, every value is summed from its own window's rows,
always in the same order, so a row's result does not depend on how much history precedes it or
what follows it (bit for bit): that is what the no-look-ahead and month-alone guarantees need, and
what a short window of nearly equal returns needs (a cumulative-sum difference loses every digit of
its variance there).

A range is worked through in chunks of `chunk` rows; a chunk computes rows [s, e) and reads the
`look` rows before s (the longest window), so no result is partial, and its work arrays stay in
the core's cache. Each kernel call allocates its own work arrays (a few hundred kB, reused by every
chunk of the call) and shares no mutable state, so the caller can run ranges on threads: the kernels
release the GIL. Windows and chunking come in one `Params` argument, not globals, so the on-disk
compile cache can never hold stale windows. NaN stands for null; validity flags (1 = value present)
are packed into Arrow bitmaps.

What each feature is: snapshots.py's docstring, and the plain-polars oracle the kernels are tested
against, quant_assets_tests/features/bar_family_oracle.py. Change a feature there first.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

# Options of every compiled function here and in rows.py / grid.py. error_model numpy: x / 0 gives
# inf or NaN as in numpy instead of raising.
JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
# moments per series: x, x^2 and the count of present values (absent values count as 0)
_MOMENTS = 3
_DAY_MS = 86_400_000


@njit(**JIT)
def _log1p(x: float) -> float:
    # log(u) * x / (u - 1), u = 1 + x: within 2 ulp of log1p (Goldberg 1991, theorem 4), and one
    # libm log instead of the much slower log1p
    u = 1.0 + x
    if u == 1.0:
        return x
    return math.log(u) * (x / (u - 1.0))


@njit(**JIT)
def _top_bit(n: int) -> int:
    b = 0
    while (2 << b) <= n:
        b += 1
    return b


@njit(**JIT)
def _level(x: np.ndarray, lev: np.ndarray, b: int) -> np.ndarray:
    return x if b == 0 else lev[b]


@njit(**JIT)
def _add_shifted(base: np.ndarray, part: np.ndarray, k: int, out: np.ndarray, m: int) -> None:
    """out[t] = base[t] + part[t - k] for t in [k, m), out[t] = base[t] below k (partial rows).
    Slices keep every index a plain loop counter, which lets the loop vectorise."""
    k = min(k, m)
    n = m - k
    lo, hi, dst, head, out_head = part[:n], base[k:m], out[k:m], base[:k], out[:k]
    for t in range(k):
        out_head[t] = head[t]
    for t in range(n):
        dst[t] = hi[t] + lo[t]


@njit(**JIT)
def _window_sums(x: np.ndarray, windows: np.ndarray, lev: np.ndarray, out: np.ndarray, m: int) -> None:
    """out[w, :m] = sums of x over windows[w] rows ending at each row (the first rows partial).
    lev[b] holds the 2**b-row sums (lev[0] unused: x is level 0)."""
    prev = x
    for b in range(1, _top_bit(windows.max()) + 1):
        _add_shifted(prev, prev, 1 << (b - 1), lev[b], m)
        prev = lev[b]
    for w in range(windows.size):
        n = windows[w]
        hi = _top_bit(n)
        acc, dst = _level(x, lev, hi), out[w]
        span = 1 << hi
        for b in range(hi - 1, -1, -1):  # the newest `span` rows, then older power-of-two blocks
            if n & (1 << b):
                _add_shifted(acc, _level(x, lev, b), span, dst, m)
                acc = dst
                span += 1 << b
        if span == 1 << hi:  # a power of two
            dst[:m] = acc[:m]


@njit(**JIT)
def _rolling_std(s1: np.ndarray, s2: np.ndarray, c: np.ndarray, min_count: int, out: np.ndarray) -> None:
    """Sample std (ddof 1) from window sums of x, x^2 and the count (equal-length slices); NaN
    where fewer than min_count values are present."""
    for i in range(out.size):
        mean = s1[i] / c[i]
        var = (s2[i] - mean * s1[i]) / (c[i] - 1.0)
        var = var if var > 0.0 else 0.0  # a constant window can round to a tiny negative variance
        out[i] = math.sqrt(var) if c[i] >= min_count else np.nan


@njit(**JIT)
def _index(values: np.ndarray, v: int) -> int:
    for i in range(values.size):
        if values[i] == v:
            return i
    return -1


class Params(NamedTuple):
    """The bar family's windows and chunking: one argument of every kernel instead of nine.

    A named tuple because numba types it by its fields: compiled code keys on those types, so the
    on-disk cache still works (with a jitclass argument it never hits: the class's id is part of the
    key, numba issue 9659), the kernels still release the GIL, and fields are read by name at no
    cost. A record array could not hold the arrays. The windows are arguments, not globals, so the
    cache can never hold stale windows; family.params builds them from keys.py.
    """

    ret_w: np.ndarray  # int64: ret_n per n
    vol_w: np.ndarray  # int64: vol_n per n
    vol_min: np.ndarray  # int64: present returns vol_n needs, per vol_w
    accel: np.ndarray  # int64 rows (a, b): ret_accel_a_b; a and b in ret_w
    term: np.ndarray  # int64 rows (a, b): vol_term_a_b; a and b in vol_w
    volz_w: np.ndarray  # int64, one window: vol_z's
    volz_min: int
    chunk: int  # rows a chunk computes
    look: int  # rows a chunk reads before its first (>= the longest window)


class Hourly(NamedTuple):
    """The 1h family on the 1h canvas as five_minute reads it (its last row: all absent)."""

    values: np.ndarray  # float64 (family rows, 1h rows)
    valid: np.ndarray  # uint8, 1 where values is not NaN
    flags: np.ndarray  # int8 rows close_from_fallback, bar_missing_flag
    rows: np.ndarray  # uint64: the 1h row each group of `group` 5m rows reads
    group: int


class FiveMinuteOut(NamedTuple):
    """Where five_minute writes, all with one column per 5m canvas row (bits: one byte per 8)."""

    family: np.ndarray  # float64 (family rows, n)
    h1: np.ndarray  # float64 (family rows, n)
    h1_flags: np.ndarray  # int8 (2, n)
    date: np.ndarray  # int32 days since 1970
    bits: np.ndarray  # uint8 Arrow validity bitmaps of close, volume, family, h1 (in that order)


@njit(**JIT)
def _scratch(p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A chunk's work arrays, owned by one kernel call (so by one thread): moments of returns and of
    log volumes, power-of-two sums, window sums per moment, and returns / log volumes / std."""
    m = p.chunk + p.look
    longest = max(p.vol_w.max(), p.volz_w.max())
    return (
        np.empty((2 * _MOMENTS, m)),
        np.empty((_top_bit(longest) + 1, m)),
        np.empty((_MOMENTS, max(p.vol_w.size, p.volz_w.size), m)),
        np.empty((3, m)),
    )


@njit(**JIT)
def _family_chunk(src, dst, lr_out, p, scratch, s, e):
    """The bar family of canvas rows [s, e) into dst[:, s:e] (see `family`)."""
    mom, lev, sums, work = scratch
    look = p.look
    a = s - look
    m = e - a
    volume, quote = src[1, a:e], src[2, a:e]
    lr, lv, std = work[0, :m], work[1, :m], work[2, :m]
    # 1-bar log returns and log volumes; moments with absent values as 0 and a zero count
    first = 1 if a == 0 else 0  # the canvas's first row has no previous close
    lr[0] = np.nan
    now, before, out = src[0, a + first : e], src[0, a + first - 1 : e - 1], lr[first:m]
    for i in range(m - first):
        out[i] = math.log(now[i] / before[i])
    for i in range(m):
        lv[i] = _log1p(volume[i])
    for i in range(m):
        x, y = lr[i], lv[i]
        ok = x == x
        mom[0, i] = x if ok else 0.0
        mom[1, i] = x * x if ok else 0.0
        mom[2, i] = 1.0 if ok else 0.0
        ok = y == y
        mom[3, i] = y if ok else 0.0
        mom[4, i] = y * y if ok else 0.0
        mom[5, i] = 1.0 if ok else 0.0
    n = e - s  # output rows: chunk rows look.. m, canvas rows s..e
    ret_w, vol_w = p.ret_w, p.vol_w
    n_ret, n_vol = ret_w.size, vol_w.size
    for j in range(_MOMENTS):
        _window_sums(mom[j], vol_w, lev, sums[j], m)
    for w in range(n_vol):
        _rolling_std(
            sums[0, w, look:m], sums[1, w, look:m], sums[2, w, look:m], p.vol_min[w], dst[n_ret + w, s:e]
        )
    for r in range(n_ret):
        k = ret_w[r]
        now, then, out = src[0, s:e], src[0, s - k : e - k], dst[r, s:e]
        for i in range(n):
            out[i] = now[i] / then[i] - 1.0
    row = n_ret + n_vol
    accel, term = p.accel, p.term
    for q in range(accel.shape[0]):  # ret_accel_a_b = ret_a / a - ret_b / b
        pa, pb = accel[q, 0], accel[q, 1]
        ra, rb, out = dst[_index(ret_w, pa), s:e], dst[_index(ret_w, pb), s:e], dst[row + q, s:e]
        for i in range(n):
            out[i] = ra[i] / pa - rb[i] / pb
    row += accel.shape[0]
    for q in range(term.shape[0]):  # vol_term_a_b = vol_a / vol_b, null where vol_b is 0
        va, vb = dst[n_ret + _index(vol_w, term[q, 0]), s:e], dst[n_ret + _index(vol_w, term[q, 1]), s:e]
        out = dst[row + q, s:e]
        for i in range(n):
            out[i] = va[i] / vb[i] if vb[i] != 0.0 else np.nan
    row += term.shape[0]
    for j in range(_MOMENTS):
        _window_sums(mom[_MOMENTS + j], p.volz_w, lev, sums[j], m)
    s1, s2, c = sums[0, 0, look:m], sums[1, 0, look:m], sums[2, 0, look:m]
    sd = std[look:m]
    _rolling_std(s1, s2, c, p.volz_min, sd)
    lvo, log_volume, vol_z = lv[look:m], dst[row, s:e], dst[row + 1, s:e]
    for i in range(n):
        log_volume[i] = lvo[i]
        vol_z[i] = (lvo[i] - s1[i] / c[i]) / sd[i] if sd[i] != 0.0 else np.nan
    q, lro, impact = quote[look:m], lr[look:m], dst[row + 2, s:e]
    for i in range(n):
        impact[i] = abs(lro[i]) / _log1p(q[i]) if q[i] > 0.0 else np.nan
    if lr_out.size:
        lr_out[s:e] = lro


@njit(**JIT)
def family(src, dst, lr_out, p, lo, hi):
    """The bar family of canvas rows [lo, hi) (lo >= p.look) into dst[:, lo:hi], chunk by chunk.

    src rows: close, volume, quote_volume. dst rows: ret per p.ret_w, vol per p.vol_w, ret_accel
    per p.accel and vol_term per p.term, log_volume, vol_z, volume_impact. lr_out gets the 1-bar log
    return unless it is empty. p: Params. The work arrays are this call's own.
    """
    scratch = _scratch(p)
    for s in range(lo, hi, p.chunk):
        _family_chunk(src, dst, lr_out, p, scratch, s, min(s + p.chunk, hi))


@njit(**JIT)
def validity(x: np.ndarray, flags: np.ndarray) -> None:
    """flags[i] = 1 where x[i] is not NaN (equal-length slices)."""
    for i in range(x.size):
        flags[i] = x[i] == x[i]


@njit(**JIT)
def _pack_bits(flags: np.ndarray, n: int, bits: np.ndarray, at: int) -> None:
    """bits[k, at + j] = flags[k, 8j : 8j + 8] as an Arrow bitmap byte (LSB first), first n flags."""
    m8 = (n + 7) // 8 * 8
    for k in range(flags.shape[0]):
        row, out = flags[k, :m8], bits[k, at : at + m8 // 8]
        row[n:m8] = 0
        words = row.view(np.uint64)  # little-endian: flag i of a word is its byte i
        for j in range(m8 // 8):
            # the multiply moves byte i's low bit to bit 56 + i (the partial products never
            # overlap, so nothing carries); the shift brings the eight bits down
            out[j] = (words[j] * np.uint64(0x0102040810204080)) >> np.uint64(56)


@njit(**JIT)
def _rest_chunk(src, ts, hourly, out, flags, s, e):
    """Rows [s, e) of everything five_minute writes besides the 5m family."""
    n = e - s
    validity(src[0, s:e], flags[0, :n])
    validity(src[1, s:e], flags[1, :n])
    fam = out.family
    nf = fam.shape[0]
    for k in range(nf):
        validity(fam[k, s:e], flags[2 + k, :n])
    group = hourly.group
    reads = hourly.rows[s // group : (e + group - 1) // group]  # unsigned: no negative-index checks
    for k in range(hourly.values.shape[0]):
        hk, vk, dst, fk = hourly.values[k], hourly.valid[k], out.h1[k, s:e], flags[2 + nf + k, :n]
        for g in range(reads.size):
            v, ok = hk[reads[g]], vk[reads[g]]
            for j in range(g * group, min((g + 1) * group, n)):
                dst[j] = v
                fk[j] = ok
    for k in range(hourly.flags.shape[0]):
        hk, dst = hourly.flags[k], out.h1_flags[k, s:e]
        for g in range(reads.size):
            v = hk[reads[g]]
            for j in range(g * group, min((g + 1) * group, n)):
                dst[j] = v
    tsv, dv, day = ts[s:e], out.date[s:e], float(_DAY_MS)
    for i in range(n):
        # floor(ts / day) in doubles is exact: ts < 2**53 is exact, and a time 1 ms before midnight
        # divides to ~1e-8 below the integer, far above the rounding of a quotient near 2e4
        dv[i] = math.floor(tsv[i] / day)
    _pack_bits(flags, n, out.bits, s // 8)


@njit(**JIT)
def five_minute(src, ts, hourly, out, p, lo, hi):
    """The 5m canvas rows [lo, hi) (lo and p.chunk multiples of 8 and of hourly.group), chunk by
    chunk: the bar family into out.family (see `family`; src rows close, volume, quote_volume);
    each row's 1h family and flags from the 1h row its group of rows reads; the date from ts
    (epoch ms); and the validity bitmaps. The work arrays are this call's own."""
    scratch = _scratch(p)
    flags = np.empty((out.bits.shape[0], p.chunk), dtype=np.uint8)
    none = np.zeros(0)
    for s in range(lo, hi, p.chunk):
        e = min(s + p.chunk, hi)
        _family_chunk(src, out.family, none, p, scratch, s, e)
        _rest_chunk(src, ts, hourly, out, flags, s, e)
