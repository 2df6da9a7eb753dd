"""TSMixer shapes and sizes; windows are strided views of one per-coin grid; scaling sees training rows only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quant_assets.ml.tsmixer import TSMixer, TSMixerConfig
from quant_assets.ml.windows import STEP_MS, Standardizer, Windows, place_on_grid, time_split, window_ends

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC in ms


def test_benchmark_shape_has_about_50k_parameters_and_predicts_every_series():
    """Input 96, 10 coins, a target and 4 exogenous columns, 12 outputs: the issue's benchmark shape."""
    torch.manual_seed(0)
    model = TSMixer(TSMixerConfig(n_vars=5, n_series=10, n_targets=12))
    # embed 96 + time projection 1,164 + 2 blocks x 21,500 + head 2,316 (neuralforecast TSMixerx: 48,702)
    assert model.n_params() == 46_576
    out = model(torch.randn(256, 96, 10, 5))
    assert out.shape == (256, 10, 12) and torch.isfinite(out).all()


def test_a_sample_output_does_not_depend_on_the_rest_of_its_batch():
    """LayerNorm, not BatchNorm: needed for a DDP rank's half-batch to compute what one process computes."""
    torch.manual_seed(0)
    model = TSMixer(TSMixerConfig(n_vars=7, n_coins=3)).train()
    x, coin = torch.randn(8, 96, 1, 7), torch.tensor([[0], [1], [2], [0], [1], [2], [0], [1]])
    together = model(x, coin)
    alone = torch.cat([model(x[i : i + 1], coin[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    # the coin vector matters: the same window read as another coin gives another prediction
    assert not torch.allclose(model(x[:1], torch.tensor([[0]])), model(x[:1], torch.tensor([[1]])))


def test_wrong_input_shape_or_missing_coin_ids_fail_clearly():
    model = TSMixer(TSMixerConfig(n_vars=4, n_coins=2))
    with pytest.raises(ValueError, match=r"config wants \[B, 96, 1, 4\]"):
        model(torch.randn(2, 96, 1, 5), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="needs coin ids"):
        model(torch.randn(2, 96, 1, 4))


def grid_rows():
    """BTC: 10 rows with a gap at 3 and 4; ETH: 6 rows. Feature 0 encodes the row, feature 1 the coin."""
    btc = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]
    eth = [100, 101, 102, 103, 104, 105]
    symbol = np.array(["ETHUSDT"] * len(eth) + ["BTCUSDT"] * len(btc))
    ts = np.array([T0 + STEP_MS * i for i in eth + btc], dtype=np.int64)
    x = np.stack([np.arange(len(symbol)), (symbol == "ETHUSDT").astype(float)], 1).astype(np.float32)
    y = np.arange(len(symbol), dtype=np.float32)[:, None]
    return symbol, ts, x, y


def test_rows_land_on_a_per_coin_grid_with_gaps_as_nan():
    symbol, ts, x, y = grid_rows()
    g = place_on_grid(symbol, ts, x, y)
    assert g.symbols == ("BTCUSDT", "ETHUSDT")
    assert g.offsets.tolist() == [0, 12, 18]
    assert g.row[:12].tolist() == [6, 7, 8, -1, -1, 9, 10, 11, 12, 13, 14, 15]
    assert np.isnan(g.x[3:5]).all() and np.isnan(g.y[3:5]).all()
    assert g.ts_ms[12] == T0 + STEP_MS * 100 and (np.diff(g.ts_ms[:12]) == STEP_MS).all()


def test_windows_are_the_rows_before_their_end_and_never_cross_coins():
    symbol, ts, x, y = grid_rows()
    g = place_on_grid(symbol, ts, x, y)
    ends = window_ends(g, input_len=4)
    # BTC: ends 5 (gap rows 3, 4 inside are fine) .. 11 but not 3, 4 (no row); ETH: 15, 16, 17
    assert ends.tolist() == [5, 6, 7, 8, 9, 10, 11, 15, 16, 17]
    flat = torch.from_numpy(np.nan_to_num(g.x, nan=-1.0))
    windows = Windows(flat, 4)
    assert windows.view.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # a view, no copy
    got = windows(torch.from_numpy(ends))
    assert got.shape == (10, 4, 2)
    for b, e in enumerate(ends):
        np.testing.assert_array_equal(got[b].numpy(), np.nan_to_num(g.x[e - 3 : e + 1], nan=-1.0))
        assert (g.coin[e - 3 : e + 1] == g.coin[e]).all()  # one coin per window


def test_off_grid_or_duplicate_rows_fail_naming_the_coin():
    symbol, ts, x, y = grid_rows()
    bad = ts.copy()
    bad[-1] += 60_000
    with pytest.raises(ValueError, match="BTCUSDT: row at ts .* is off the 5m grid"):
        place_on_grid(symbol, bad, x, y)
    dup = ts.copy()
    dup[-1] = dup[-2]
    with pytest.raises(ValueError, match="BTCUSDT: two rows at ts"):
        place_on_grid(symbol, dup, x, y)


def test_standardisation_is_fitted_on_training_rows_only():
    rng = np.random.default_rng(1)
    n = 400
    symbol = np.array(["BTCUSDT"] * n)
    ts = T0 + STEP_MS * np.arange(n, dtype=np.int64)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.normal(size=(n, 2)).astype(np.float32)
    g = place_on_grid(symbol, ts, x, y)
    split = time_split(g, window_ends(g, 96), val_fraction=0.25, embargo_bars=49)
    last_train = split.train_ends.max()
    assert split.train_rows.sum() == last_train + 1 and not split.train_rows[last_train + 1 :].any()
    assert split.val_ends.min() > last_train + 49
    s1 = Standardizer.fit(g.x, split.train_rows)
    x2 = x.copy()
    x2[last_train + 1 :] += 1e6  # what happens after the training rows cannot move the scaling
    s2 = Standardizer.fit(place_on_grid(symbol, ts, x2, y).x, split.train_rows)
    np.testing.assert_array_equal(s1.mean, s2.mean)
    np.testing.assert_array_equal(s1.std, s2.std)
    np.testing.assert_allclose(s1.mean, x[: last_train + 1].mean(axis=0), rtol=1e-5, atol=1e-6)
    z = s1.apply(np.array([[np.nan, 0.0, 0.0]], dtype=np.float32))
    assert z[0, 0] == 0.0  # a missing value becomes the training mean
