"""Paper trading and monitoring, pure: frames and numbers in, frames and numbers out (no Dagster, no lake).

- `trading`: one day of a book's bars (scores of a champion) -> orders, fills, PnL and the state
  carried to the next day, by the backtest's own position and cost rules.
- `monitor`: PSI, confidence calibration (P(sign correct) by |prediction| bucket, ECE), performance
  of predictions against realised returns.
"""
