"""Whole-day bootstrap of a panel's IC: exact resampling, and a gate whose false-positive rate is nominal.

Null panels: 120 days x 10 coins x 6 rows a day, rows ordered (symbol, day, time) as the feature
matrix is. Predictor and target are independent, each with a day-level common shock and a
time-of-day common shock (coins co-move), so the true IC is 0 and rows of one day are correlated
across coins: the situation in which resampling rows understates the IC's uncertainty.
"""

from __future__ import annotations

import numpy as np
import pytest

from quant_assets.validation import ICInterval, block_bootstrap_ic, day_bootstrap_ic
from quant_assets.validation.bootstrap import circular_block_indices

N_DAYS, N_COINS, PER_DAY = 120, 10, 6
ALPHA = 0.05
N_NULL = 300  # FPR's standard error at 5%: 1.3 points
N_NULL_ROWS = 120  # the per-row bootstrap is slower; its excess needs fewer panels to show
# A gate at level 5% should pass 5% of nulls; [2%, 9%] allows ~3 standard errors either way.
FPR_RANGE = (0.02, 0.09)


def null_panel(
    seed: int, day_sd: float = 0.6, time_sd: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)

    def side() -> np.ndarray:
        day = rng.normal(size=(1, N_DAYS, 1)) * day_sd
        hour = rng.normal(size=(1, N_DAYS, PER_DAY)) * time_sd
        return (day + hour + rng.normal(size=(N_COINS, N_DAYS, PER_DAY))).ravel()

    days = np.broadcast_to(np.arange(N_DAYS)[None, :, None], (N_COINS, N_DAYS, PER_DAY)).ravel()
    return side(), side(), days


def test_each_resample_is_the_pearson_ic_of_the_rows_of_the_drawn_days():
    x, y, days = null_panel(0)
    y = y + 0.05 * x
    ci = day_bootstrap_ic(x, y, days, method="pearson", block=3, n_boot=200, seed=11)
    # the same draws by hand: blocks of 3 consecutive days, every row of a drawn day, plain Pearson
    idx = circular_block_indices(N_DAYS, 3, 200, np.random.default_rng(11))
    by_day = [np.flatnonzero(days == d) for d in range(N_DAYS)]
    boots = [np.corrcoef(x[r], y[r])[0, 1] for r in (np.concatenate([by_day[d] for d in row]) for row in idx)]
    low, high, one = np.quantile(boots, [ALPHA / 2, 1 - ALPHA / 2, ALPHA])
    assert (ci.low, ci.high, ci.lower_one_sided) == pytest.approx((low, high, one), abs=1e-12)
    assert ci.ic == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert (ci.unit, ci.n_units, ci.block, ci.n) == ("days", N_DAYS, 3, len(x))


def test_spearman_point_estimate_is_the_rank_ic_and_row_order_does_not_matter():
    x, y, days = null_panel(1)
    y = y + 0.1 * x**3
    ci = day_bootstrap_ic(x, y, days, n_boot=300, seed=2)
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    assert ci.ic == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    perm = np.random.default_rng(3).permutation(len(x))
    assert day_bootstrap_ic(x[perm], y[perm], days[perm], n_boot=300, seed=2) == ci
    # the public entry point routes panels here
    assert block_bootstrap_ic(x, y, days=days, n_boot=300, seed=2) == ci


def test_missing_rows_are_dropped_and_bad_input_names_the_problem():
    x, y, days = null_panel(2)
    x[:5] = np.nan
    ci = day_bootstrap_ic(x, y, days, n_boot=100)
    assert isinstance(ci, ICInterval) and ci.n == len(x) - 5
    with pytest.raises(ValueError, match="days must label every row"):
        day_bootstrap_ic(x, y, days[:-1])
    with pytest.raises(ValueError, match="at least 10 distinct days"):
        day_bootstrap_ic(x[:60], y[:60], np.repeat(np.arange(6), 10))
    with pytest.raises(ValueError, match=r"block must be in \[1, 120\] days"):
        day_bootstrap_ic(x, y, days, block=121)


@pytest.mark.slow
def test_a_one_sided_five_percent_gate_on_whole_days_passes_nulls_five_percent_of_the_time():
    """False-positive rate over N_NULL null panels: whole days near 5%, per-row blocks well above.

    Also the interval's width against the IC's real spread over the nulls: whole days match it,
    per-row blocks (circular blocks of n^(1/3) rows, the previous method) are too narrow.
    """
    ics, day_pass, day_half = [], [], []
    row_pass, row_half = [], []
    for seed in range(N_NULL):
        x, y, days = null_panel(seed)
        ci = block_bootstrap_ic(x, y, days=days, alpha=ALPHA, n_boot=1000, seed=seed)
        ics.append(ci.ic)
        day_pass.append(ci.above_zero)
        day_half.append((ci.high - ci.low) / 2)
        if seed < N_NULL_ROWS:
            # Pearson: re-ranking every resample would take 10x longer and the unit is what differs
            rows = block_bootstrap_ic(x, y, method="pearson", alpha=ALPHA, n_boot=200, seed=seed)
            row_pass.append(rows.above_zero)
            row_half.append((rows.high - rows.low) / 2)
    true_half = 1.96 * np.std(ics)  # half-width an honest 95% interval should have
    fpr_days, fpr_rows = np.mean(day_pass), np.mean(row_pass)
    assert FPR_RANGE[0] <= fpr_days <= FPR_RANGE[1], fpr_days
    assert fpr_rows > FPR_RANGE[1], fpr_rows  # the old method fails the same test
    assert 0.85 < np.mean(day_half) / true_half < 1.15, np.mean(day_half) / true_half
    assert np.mean(row_half) / true_half < 0.75, np.mean(row_half) / true_half
