"""The one trading-cost model: labels' `est_cost` and the backtest both use it.

Cost of a trade, as a fraction of traded notional:

    cost = taker_fee + slippage + impact_coef * sqrt(notional / depth_notional)

- `taker_fee`: exchange taker fee (Binance USD-M VIP0 is 4 bp; spot 10 bp, 7.5 bp with BNB).
- `slippage`: half-spread plus queue slippage for a marketable order, in the
  bookDepth world roughly 1-2 bp on liquid pairs.
- impact: the square-root law (Almgren et al.; Tóth et al.), trade notional over the
  notional resting within `depth_band_pct` of mid on the side being hit. With no book
  (missing depth) the impact uses `fallback_depth_notional`.
`est_cost` is the one-way cost of a `trade_notional` order at the row's book depth. Labels
charge it as the product defines them (features.keys.LABEL_COST_MULTIPLIER): label_1h =
fwd_ret_1h - est_cost and label_4h = fwd_ret_4h - 2 * est_cost. The backtest charges every
actual trade, entry and exit, with `one_way_cost`.

Funding on a USD-M perpetual is a cash flow at each funding time (every 8 h):
`-position_notional * funding_rate`, so a long pays a positive rate and a short
receives it (Binance's convention). The backtest charges it with `funding_payment` at each
settlement event it is given (`quant_assets.backtest.funding`), never per bar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class CostModel:
    taker_fee: float = 0.0004
    slippage: float = 0.0002
    impact_coef: float = 0.001
    trade_notional: float = 10_000.0  # USD notional of a typical order, for the label's est_cost
    depth_band_pct: int = 1  # which bookDepth band (+-1%) measures liquidity
    fallback_depth_notional: float = 1_000_000.0

    def one_way_cost(self, notional, depth_notional):
        """Cost fraction of trading `notional` against `depth_notional` (numpy arrays or scalars)."""
        depth = np.where(
            np.isfinite(depth_notional) & (depth_notional > 0), depth_notional, self.fallback_depth_notional
        )
        return self.taker_fee + self.slippage + self.impact_coef * np.sqrt(np.abs(notional) / depth)

    def trade_cost(self, notional, depth_notional):
        """USD cost of trading `notional` (signed or not) against `depth_notional`."""
        return np.abs(notional) * self.one_way_cost(notional, depth_notional)

    @staticmethod
    def funding_payment(position_notional, funding_rate):
        """Cash flow of holding `position_notional` (signed USD) over a funding time: long pays positive rates."""
        return -np.asarray(position_notional) * np.asarray(funding_rate)

    def est_cost_expr(self, depth_notional: pl.Expr) -> pl.Expr:
        """Polars expression for one-way `est_cost` of a `trade_notional` order (labels use this)."""
        depth = (
            pl.when(depth_notional.is_finite() & (depth_notional > 0))
            .then(depth_notional)
            .otherwise(pl.lit(self.fallback_depth_notional))
        )
        return (
            self.taker_fee + self.slippage + self.impact_coef * (pl.lit(self.trade_notional) / depth).sqrt()
        )

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_COSTS = CostModel()
