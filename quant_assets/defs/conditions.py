"""The automation conditions of the layers after the features (models, evaluation, operations).

Every automated asset waits for its upstream blocking checks across runs
(`all_deps_blocking_checks_passed`): a month whose raw or feature check failed in an earlier run
holds back every model, gate and paper day that reads it until a later run of that month passes.
The `automation` sensor (defs/features/automation.py) evaluates these conditions.

- `FOLLOW_RUNNING_CUTOFF` (liquid_teacher, liquid_student, candidate_models): the running cut-off
  partition (the latest model partition) is built when it appears (the monthly retrain: a new month
  is a new cut-off) and rebuilt when its inputs update (the daily follow). Rebuilding a cut-off
  trains again on the same rows (every training row's label ends before the cut-off, and training
  is seeded: the same model) and predicts the running month's new days into `model_predictions`, so
  the gates see every new day. There is no separate predict-only path: a rebuild costs the teacher's
  training (about 4 minutes on the full 420-day window here), once a day.
  Only the running month of `feature_matrix_main` must exist: older months of the 420-day window
  that were never built do not hold it back (the training fails naming too little history instead,
  where that is so).
- `AFTER_THE_DAY` (paper_trading, monitoring): day D is traded and monitored once D is over: the
  partition of the last complete UTC day, when its inputs update (the daily raw run rebuilds the
  running month just after midnight, the features follow, then paper trading of the day before,
  then its monitoring). Today's partition, still filling, is never automated.
"""

import datetime as dt

import dagster as dg

AC = dg.AutomationCondition

# Missing upstream partitions in the running month hold an asset back; older missing months do not.
RUNNING_DEPS_MISSING = AC.any_deps_match(
    AC.in_latest_time_window() & AC.missing() & ~AC.will_be_requested()
).with_label("running_month_deps_missing")

FOLLOW_RUNNING_CUTOFF = (
    AC.eager().replace("any_deps_missing", RUNNING_DEPS_MISSING) & AC.all_deps_blocking_checks_passed()
).with_label("follow_running_cutoff_after_upstream_checks_pass")

# Daily partitions (end_offset=1: today is the latest): the 48 hours before the latest window's end
# hold yesterday and today; without today, the last complete day.
LAST_COMPLETE_DAY = (
    AC.in_latest_time_window(dt.timedelta(hours=48)) & ~AC.in_latest_time_window()
).with_label("last_complete_day")

AFTER_THE_DAY = (
    AC.eager().replace("in_latest_time_window", LAST_COMPLETE_DAY) & AC.all_deps_blocking_checks_passed()
).with_label("after_the_day_after_upstream_checks_pass")
