"""The feature layer: pure functions, polars frames in and frames out (no Dagster, no lake I/O).

    snaps  = feature_snapshots(bars, prices, end=...)            # snapshots.py
    social = social_text_latent(events, event_links)             # social.py
    latent = market_latent(bars, prices, end=...)                # market_latent.py
    matrix = feature_matrix(snaps, social, latent, orderbook, funding, onchain, derivatives,
                            events, event_links, costs)          # matrix.py

Time rule everywhere: the row keyed (symbol, t) on the 5m clock is a decision at t + 5m. It may use
bars with ts <= t (the bar opening at t has closed by then), 1h bars whose hour has closed by t + 5m,
order-book snapshots and fallback prices with ts <= t, and published rows with available_at <= t.
Labels (matrix.py) look forward and never feed features.

Partitions: every function returns rows for all input times. To build the month [start, end), read
raw rows with ts in [start - LOOKBACK, end + LOOKAHEAD) (keys.py), compute, keep ts in [start, end).

The bar family (snapshots.py, market_latent.py) runs in compiled numba kernels (kernels.py) on flat
per-coin grids (grid.py, rows.py); the other tables are polars expressions. Column names, windows and the feature lists (LIQUID_FEATURE_KEYS, LIQUID_FULL_FEATURE_KEYS) live in
keys.py and nowhere else.
"""
