"""A source that wraps the simulator and corrupts its output in one stated way.

Used to show that each blocking check catches its defect end to end through Dagster and
stops what is downstream. It is a real source (real rows, real lake), not a mock.
"""

from __future__ import annotations

import polars as pl

from quant_assets.resources import MarketDataSource

DUPLICATED_BARS = 3  # "duplicate_bars": the first 3 bars again, so 3 keys each held by 2 rows
HIGH_BELOW_LOW_BARS = 5  # "high_below_low": the first 5 bars get high = low / 2


class DefectiveSource:
    def __init__(self, inner, defect: str):
        self.inner, self.defect, self.name = inner, defect, f"defective({defect})"

    def fetch(self, tables, start, end, until):
        frames = self.inner.fetch(tables, start, end, until)
        bars = frames.get("market_bars")
        if bars is not None and bars.height:
            if self.defect == "duplicate_bars":
                frames["market_bars"] = pl.concat([bars, bars.head(DUPLICATED_BARS)])
            elif self.defect == "high_below_low":
                frames["market_bars"] = bars.with_columns(
                    pl.when(pl.int_range(pl.len()) < HIGH_BELOW_LOW_BARS)
                    .then(pl.col("low") * 0.5)
                    .otherwise(pl.col("high"))
                    .alias("high")
                )
        return frames


class DefectiveSourceResource(MarketDataSource):
    defect: str = "duplicate_bars"

    def build(self):
        return DefectiveSource(super().build(), self.defect)
