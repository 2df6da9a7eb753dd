"""Partition definitions, one line each; imported everywhere, never redefined.

Monthly, all symbols in one partition: Dagster spends ~15-20 ms of bookkeeping per
asset-partition in a ranged run, so 2018->now costs ~2 s per asset monthly against
over a minute daily. `end_offset=1` makes the running month a partition.
"""

import dagster as dg

from quant_assets.universe import HISTORY_START

monthly = dg.MonthlyPartitionsDefinition(start_date=HISTORY_START.isoformat(), end_offset=1, timezone="UTC")
# Model partition M = models trained on rows whose label ends before M's start, predicting month M
# (a training cut-off per month: a backfill is a walk-forward, the running month is "retrain now").
model_cutoffs = dg.MonthlyPartitionsDefinition(start_date="2019-01-01", end_offset=1, timezone="UTC")
# Operations (paper trading, monitoring): one partition per UTC day, today included (traded as it fills).
daily = dg.DailyPartitionsDefinition(start_date="2019-01-01", end_offset=1, timezone="UTC")
