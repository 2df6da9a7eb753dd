"""market_latent: a fixed low-dimensional summary of each coin's last 4 hours of price and volume.

Two sequences over the last LATENT_WINDOW (48) 5m bars ending at the row's own bar:
- normalised returns z_k = ret_1_k / vol_288_k, each scaled by the volatility known at its own bar;
- normalised volumes = vol_z_k (log volume against its trailing 288-bar mean and std).
Both are clipped to +-LATENT_CLIP, missing bars count as 0 (no surprise), and each is projected on
the first LATENT_COEFS vectors of the orthonormal DCT-II basis (level, slope, curvature, ...):
`mkt_latent_0..3` from returns, `mkt_latent_4..7` from volumes. The basis is fixed, never fitted,
so no row's value depends on any other period's data. A row is null when fewer than
MIN_WINDOW_FRACTION of the window's bars are present.

Time rule: the row (symbol, t) uses bars with ts <= t (as feature_snapshots).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from quant_assets.features.grid import bar_grid, drop_pad_rows, select_bars, select_prices
from quant_assets.features.keys import LATENT_COEFS, LATENT_WINDOW, MARKET_LATENT_KEYS
from quant_assets.features.snapshots import STEP, bar_family, min_samples

LATENT_CLIP = 10.0


def dct_basis(n: int, k: int) -> np.ndarray:
    """First k rows of the orthonormal DCT-II matrix of size n (row j: cos(pi (i + 1/2) j / n))."""
    i = np.arange(n)
    basis = np.stack([np.cos(np.pi * (i + 0.5) * j / n) for j in range(k)])
    basis[0] *= np.sqrt(1.0 / n)
    basis[1:] *= np.sqrt(2.0 / n)
    return basis


def market_latent(
    bars: pl.LazyFrame,
    prices: pl.LazyFrame | None = None,
    *,
    end: dt.datetime | None = None,
    market: str = "spot",
) -> pl.LazyFrame:
    """Rows (symbol, ts, date, mkt_latent_0..7) on the same 5m clock as feature_snapshots."""
    g5 = bar_grid(select_bars(bars, "5m", market), select_prices(prices), STEP, end, dt.timedelta(0))
    fam = bar_family(g5)
    z_ret = (pl.col("_lr") / pl.when(pl.col("vol_288") > 0).then(pl.col("vol_288"))).clip(
        -LATENT_CLIP, LATENT_CLIP
    )
    z_vol = pl.col("vol_z").clip(-LATENT_CLIP, LATENT_CLIP)
    fam = fam.select("symbol", "ts", "is_pad", z_ret.alias("_zr"), z_vol.alias("_zv"))
    # rolling_sum's weights apply oldest-first, matching the basis's time order (index 0 = oldest bar)
    basis = dct_basis(LATENT_WINDOW, LATENT_COEFS)
    need = min_samples(LATENT_WINDOW)
    dims = []
    for seq_i, col in enumerate(("_zr", "_zv")):
        x = pl.col(col)
        covered = x.is_not_null().cast(pl.Int32).rolling_sum(LATENT_WINDOW) >= need
        for j in range(LATENT_COEFS):
            proj = x.fill_null(0.0).rolling_sum(LATENT_WINDOW, weights=basis[j].tolist())
            dims.append(pl.when(covered).then(proj).alias(MARKET_LATENT_KEYS[seq_i * LATENT_COEFS + j]))
    out = fam.with_columns(dims).select(
        "is_pad", "symbol", "ts", pl.col("ts").dt.date().alias("date"), *MARKET_LATENT_KEYS
    )
    return drop_pad_rows(out).drop("is_pad")
