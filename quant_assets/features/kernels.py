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
the core's cache. The kernels release the GIL: the caller runs ranges on threads. Windows are
arguments, not globals, so the on-disk compile cache can never hold stale windows. NaN stands for
null; validity flags (1 = value present) are packed into Arrow bitmaps.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Options of every compiled function here and in rows.py / grid.py. error_model numpy: x / 0 gives
# inf or NaN as in numpy instead of raising.
JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
# moments per series: x, x^2 and the count of present values (absent values count as 0)
_MOMENTS = 3


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


@njit(**JIT)
def _family_chunk(
    src, dst, lr_out, s, e, look, ret_w, vol_w, vol_min, accel, term, volz_w, volz_min, mom, lev, sums, work
):
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
    n_ret, n_vol = ret_w.size, vol_w.size
    for j in range(_MOMENTS):
        _window_sums(mom[j], vol_w, lev, sums[j], m)
    for w in range(n_vol):
        _rolling_std(
            sums[0, w, look:m], sums[1, w, look:m], sums[2, w, look:m], vol_min[w], dst[n_ret + w, s:e]
        )
    for r in range(n_ret):
        k = ret_w[r]
        now, then, out = src[0, s:e], src[0, s - k : e - k], dst[r, s:e]
        for i in range(n):
            out[i] = now[i] / then[i] - 1.0
    row = n_ret + n_vol
    for p in range(accel.shape[0]):  # ret_accel_a_b = ret_a / a - ret_b / b
        pa, pb = accel[p, 0], accel[p, 1]
        ra, rb, out = dst[_index(ret_w, pa), s:e], dst[_index(ret_w, pb), s:e], dst[row + p, s:e]
        for i in range(n):
            out[i] = ra[i] / pa - rb[i] / pb
    row += accel.shape[0]
    for p in range(term.shape[0]):  # vol_term_a_b = vol_a / vol_b, null where vol_b is 0
        va, vb = dst[n_ret + _index(vol_w, term[p, 0]), s:e], dst[n_ret + _index(vol_w, term[p, 1]), s:e]
        out = dst[row + p, s:e]
        for i in range(n):
            out[i] = va[i] / vb[i] if vb[i] != 0.0 else np.nan
    row += term.shape[0]
    for j in range(_MOMENTS):
        _window_sums(mom[_MOMENTS + j], volz_w, lev, sums[j], m)
    s1, s2, c = sums[0, 0, look:m], sums[1, 0, look:m], sums[2, 0, look:m]
    sd = std[look:m]
    _rolling_std(s1, s2, c, volz_min, sd)
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
def family(
    src,
    dst,
    lr_out,
    lo,
    hi,
    chunk,
    look,
    ret_w,
    vol_w,
    vol_min,
    accel,
    term,
    volz_w,
    volz_min,
    mom,
    lev,
    sums,
    work,
):
    """The bar family of canvas rows [lo, hi) (lo >= look) into dst[:, lo:hi], chunk by chunk.

    src rows: close, volume, quote_volume. dst rows: ret per ret_w, vol per vol_w, ret_accel per
    `accel` and vol_term per `term` (rows of (a, b)), log_volume, vol_z, volume_impact. lr_out
    gets the 1-bar log return unless it is empty. mom, lev, sums, work: scratch (family.Scratch).
    """
    for s in range(lo, hi, chunk):
        e = min(s + chunk, hi)
        _family_chunk(
            src,
            dst,
            lr_out,
            s,
            e,
            look,
            ret_w,
            vol_w,
            vol_min,
            accel,
            term,
            volz_w,
            volz_min,
            mom,
            lev,
            sums,
            work,
        )


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
def _rest_chunk(
    src,
    fam,
    h1,
    h1_valid,
    h1_flags,
    hour_rows,
    group,
    ts,
    day_ms,
    h1_out,
    h1_flags_out,
    date,
    flags,
    bits,
    s,
    e,
):
    n = e - s
    validity(src[0, s:e], flags[0, :n])
    validity(src[1, s:e], flags[1, :n])
    nf = fam.shape[0]
    for k in range(nf):
        validity(fam[k, s:e], flags[2 + k, :n])
    reads = hour_rows[s // group : (e + group - 1) // group]  # unsigned: no negative-index checks
    for k in range(h1.shape[0]):
        hk, vk, out, fk = h1[k], h1_valid[k], h1_out[k, s:e], flags[2 + nf + k, :n]
        for g in range(reads.size):
            v, ok = hk[reads[g]], vk[reads[g]]
            for j in range(g * group, min((g + 1) * group, n)):
                out[j] = v
                fk[j] = ok
    for k in range(h1_flags.shape[0]):
        hk, out = h1_flags[k], h1_flags_out[k, s:e]
        for g in range(reads.size):
            v = hk[reads[g]]
            for j in range(g * group, min((g + 1) * group, n)):
                out[j] = v
    tsv, dv, day = ts[s:e], date[s:e], float(day_ms)
    for i in range(n):
        # floor(ts / day) in doubles is exact: ts < 2**53 is exact, and a time 1 ms before midnight
        # divides to ~1e-8 below the integer, far above the rounding of a quotient near 2e4
        dv[i] = math.floor(tsv[i] / day)
    _pack_bits(flags, n, bits, s // 8)


@njit(**JIT)
def five_minute(
    src,
    fam,
    lo,
    hi,
    chunk,
    look,
    ret_w,
    vol_w,
    vol_min,
    accel,
    term,
    volz_w,
    volz_min,
    mom,
    lev,
    sums,
    work,
    h1,
    h1_valid,
    h1_flags,
    hour_rows,
    group,
    ts,
    day_ms,
    h1_out,
    h1_flags_out,
    date,
    flags,
    bits,
):
    """The 5m canvas rows [lo, hi) (lo and chunk multiples of 8 and of `group`), chunk by chunk:
    the bar family into `fam` (see `family`); each row's 1h family and flags from the 1h row its
    group of `group` rows reads (hour_rows); the date; and the validity bitmaps of close, volume,
    the 5m family and the 1h family, the rows of `bits` in that order."""
    none = np.zeros(0)
    for s in range(lo, hi, chunk):
        e = min(s + chunk, hi)
        _family_chunk(
            src,
            fam,
            none,
            s,
            e,
            look,
            ret_w,
            vol_w,
            vol_min,
            accel,
            term,
            volz_w,
            volz_min,
            mom,
            lev,
            sums,
            work,
        )
        _rest_chunk(
            src,
            fam,
            h1,
            h1_valid,
            h1_flags,
            hour_rows,
            group,
            ts,
            day_ms,
            h1_out,
            h1_flags_out,
            date,
            flags,
            bits,
            s,
            e,
        )
