"""market_latent: a fixed low-dimensional summary of each coin's last 4 hours of price and volume.

Two sequences over the last LATENT_WINDOW (48) 5m bars ending at the row's own bar:
- normalised returns z_k = ret_1_k / vol_288_k, each scaled by the volatility known at its own bar;
- normalised volumes = vol_z_k (log volume against its trailing 288-bar mean and std).
Both are clipped to +-LATENT_CLIP, missing bars count as 0 (no surprise), and each is projected on
the first LATENT_COEFS vectors of the orthonormal DCT-II basis (level, slope, curvature, ...):
`mkt_latent_0..3` from returns, `mkt_latent_4..7` from volumes. The basis is fixed, never fitted,
so no row's value depends on any other period's data. A row is null when fewer than
MIN_WINDOW_FRACTION of the window's bars are present.

Time rule: the row (symbol, t) uses bars with ts <= t (as feature_snapshots, whose 5m grid and bar
family it shares).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from quant_assets.features.family import FAMILY_KEYS, LOOK, family_rows, in_ranges, min_samples, worker_pool
from quant_assets.features.grid import STEP_MS, alloc, layout, place_5m
from quant_assets.features.keys import LATENT_COEFS, LATENT_WINDOW, MARKET_LATENT_KEYS
from quant_assets.features.rows import COIN_NAMES, coin_rows, select_bars, select_prices

LATENT_CLIP = 10.0
OUTPUT_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "ts": pl.Datetime("ms", "UTC"),
        "date": pl.Date,
        **dict.fromkeys(MARKET_LATENT_KEYS, pl.Float64),
    }
)


def dct_basis(n: int, k: int) -> np.ndarray:
    """First k rows of the orthonormal DCT-II matrix of size n (row j: cos(pi (i + 1/2) j / n))."""
    i = np.arange(n)
    basis = np.stack([np.cos(np.pi * (i + 0.5) * j / n) for j in range(k)])
    basis[0] *= np.sqrt(1.0 / n)
    basis[1:] *= np.sqrt(2.0 / n)
    return basis


def compute_latent(bars5: pl.DataFrame, prices: pl.DataFrame, end: dt.datetime | None) -> pl.DataFrame:
    """market_latent on collected `select_bars` (5m) and `select_prices` frames."""
    b5 = coin_rows(bars5, "market_bars", dedupe=True)
    coins = layout(b5, coin_rows(bars5.clear(), "market_bars", dedupe=True), end)
    if not coins:
        return OUTPUT_SCHEMA.to_frame()
    c5 = place_5m(coins, b5, coin_rows(prices, "prices", dedupe=False))
    n5 = c5.bars.shape[1]
    fam, lr = alloc((len(FAMILY_KEYS), n5)), alloc(n5)
    fam[:, :LOOK], lr[:LOOK] = np.nan, np.nan
    with worker_pool() as pool:
        in_ranges(pool, lambda s, e: family_rows(c5.bars, fam, s, e, lr), LOOK, n5)
    ts = np.concatenate(
        [np.arange(c.seg5.start, c.seg5.start + c.seg5.rows * STEP_MS, STEP_MS) for c in coins]
    )
    vol_288, vol_z = (fam[FAMILY_KEYS.index(k)] for k in ("vol_288", "vol_z"))
    canvas = pl.DataFrame({"ts": ts, "_lr": lr, "vol_288": vol_288, "vol_z": vol_z}, nan_to_null=True)
    z_ret = (pl.col("_lr") / pl.when(pl.col("vol_288") > 0).then(pl.col("vol_288"))).clip(
        -LATENT_CLIP, LATENT_CLIP
    )
    z_vol = pl.col("vol_z").clip(-LATENT_CLIP, LATENT_CLIP)
    # rolling_sum's weights apply oldest-first, matching the basis's time order (index 0 = oldest bar);
    # every coin's segment starts with LOOK >= LATENT_WINDOW empty rows, so no window reaches another coin
    basis = dct_basis(LATENT_WINDOW, LATENT_COEFS)
    need = min_samples(LATENT_WINDOW)
    dims = []
    for seq_i, x in enumerate((z_ret, z_vol)):
        covered = x.is_not_null().cast(pl.Int32).rolling_sum(LATENT_WINDOW) >= need
        for j in range(LATENT_COEFS):
            proj = x.fill_null(0.0).rolling_sum(LATENT_WINDOW, weights=basis[j].tolist())
            dims.append(pl.when(covered).then(proj).alias(MARKET_LATENT_KEYS[seq_i * LATENT_COEFS + j]))
    canvas = canvas.select(pl.col("ts").cast(pl.Datetime("ms", "UTC")), *dims)
    parts = [
        canvas.slice(c.out_lo, c.out_hi - c.out_lo).with_columns(symbol=pl.lit(COIN_NAMES[c.seg5.rank]))
        for c in coins
    ]
    return pl.concat(parts, rechunk=False).select(
        "symbol", "ts", pl.col("ts").dt.date().alias("date"), *MARKET_LATENT_KEYS
    )


def market_latent(
    bars: pl.LazyFrame,
    prices: pl.LazyFrame | None = None,
    *,
    end: dt.datetime | None = None,
    market: str = "spot",
) -> pl.LazyFrame:
    """Rows (symbol, ts, date, mkt_latent_0..7) on the same 5m clock as feature_snapshots."""
    queries = [select_bars(bars, "5m", market), select_prices(prices)]
    return pl.defer(lambda: compute_latent(*pl.collect_all(queries), end), schema=OUTPUT_SCHEMA)
