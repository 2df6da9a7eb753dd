"""Backbones: each learns a tiny batch with exogenous inputs, folds scale on training rows only, torchrun DDP equals one process."""

from __future__ import annotations

import json
import logging
import os
import subprocess

import numpy as np
import pytest
import torch

from quant_assets.ml.launch import torchrun_command
from quant_assets.ml.train_backbone import BACKBONES, BackboneConfig, fold_data, load_backbone, predict, train
from quant_assets.ml.train_student import StudentInputs, save_npz
from quant_assets.ml.window_ridge import WindowRidge, WindowRidgeConfig
from quant_assets.ml.windows import Windows

log = logging.getLogger(__name__)
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC in ms
STEP_MS = 300_000
# two market columns and three exogenous ones (funding, on-chain, derivatives), as the matrix has
FEATURES = ("ret_1", "vol_12", "funding_rate", "exchange_netflow_sum_24h", "oi_change_1h")
SMALL = {
    "itransformer": {"d_model": 16, "n_heads": 2, "ff_dim": 32, "n_layers": 1},
    "patchtst": {"d_model": 16, "n_heads": 2, "ff_dim": 32, "n_layers": 1, "patch_len": 4, "stride": 4},
    "tft": {"d_model": 8, "n_heads": 2},
}
DDP_ATOL = 1e-4  # as the student's test: float32 summation order only


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_batch(seed: int = 0, b: int = 32, length: int = 16):
    """Windows whose two targets depend on an exogenous column's recent mean and the last market value."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, len(FEATURES), generator=g)
    coin = torch.randint(0, 3, (b,), generator=g)
    y = torch.stack([2 * x[:, -4:, 2].mean(1) + x[:, -1, 0], x[:, -8:, 3].mean(1) - x[:, -1, 4]], 1)
    return x, coin, y


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_overfits_a_tiny_batch_with_exogenous_inputs(name):
    model_cls, cfg_cls = BACKBONES[name]
    x, coin, y = tiny_batch()
    torch.manual_seed(0)
    model = model_cls(cfg_cls(n_vars=len(FEATURES), input_len=16, n_targets=2, n_coins=3, **SMALL[name]))
    assert model(x, coin).shape == (32, 2)
    with pytest.raises(ValueError, match=r"input shape \(32, 16, 4\)"):
        model(x[:, :, :4], coin)  # a missing exogenous column is an error, not a silent reshape
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        loss = ((model(x, coin) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # seen here after 150 steps: falls by 1.2e2 (TFT) to 1.3e6 (PatchTST): the batch is memorised
    assert losses[-1] < losses[0] / 10, (name, losses[0], losses[-1])
    # the exogenous columns matter to the fitted model: shuffling one across the batch moves the output
    x2 = x.clone()
    x2[:, :, 3] = x2[torch.randperm(32), :, 3]
    with torch.no_grad():
        moved = float((model(x2, coin)[:, 1] - model(x, coin)[:, 1]).abs().mean())
    assert moved > 0.05, moved


def test_tft_weights_are_distributions_over_variables_and_steps():
    from quant_assets.ml.tft import TFT, TFTConfig

    x, coin, _ = tiny_batch()
    model = TFT(TFTConfig(n_vars=len(FEATURES), input_len=16, n_coins=3, d_model=8, n_heads=2))
    pred, w = model(x, coin, return_weights=True)
    assert pred.shape == (32, 2) and w["variables"].shape == (32, 5) and w["attention"].shape == (32, 16)
    torch.testing.assert_close(w["variables"].sum(1), torch.ones(32))
    torch.testing.assert_close(w["attention"].sum(1), torch.ones(32))


def make_inputs(seed: int = 0, n: int = 500, coins=("BTCUSDT", "ETHUSDT")) -> StudentInputs:
    """Rows whose labels are a trailing mean of the exogenous funding column plus noise."""
    rng = np.random.default_rng(seed)
    syms, ts, xs, ys = [], [], [], []
    for s in coins:
        x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
        sig = 3 * np.convolve(x[:, 2], np.ones(8) / 8)[:n]  # rows t-7..t only
        y = np.stack([sig + rng.normal(size=n), 2 * sig + rng.normal(size=n)], 1) * 1e-3
        y[-48:, 1] = np.nan  # like a purged frame: the last 4h labels are not known
        syms += [s] * n
        ts.append(T0 + STEP_MS * np.arange(n, dtype=np.int64))
        xs.append(x)
        ys.append(y)
    return StudentInputs(np.array(syms), np.concatenate(ts), np.concatenate(xs), FEATURES,
                         np.concatenate(ys).astype(np.float32), ("label_1h", "label_4h"), None)  # fmt: skip


def test_fold_standardisation_uses_training_rows_only():
    inp = make_inputs()
    base = fold_data(inp, 16, 0.2, 49)
    val_rows = ~base.split.train_rows & base.grid.present
    assert val_rows.sum() > 100 and base.split.train_rows.sum() > 600
    # poison every row outside the training fold (validation, embargo): scale x1e6, labels wrecked
    x, y = inp.x.copy(), inp.y.copy()
    outside = base.grid.row[val_rows]
    x[outside] = x[outside] * 1e6 + 1e3
    y[outside] = 5.0
    poisoned = fold_data(
        StudentInputs(inp.symbol, inp.ts_ms, x, FEATURES, y, inp.label_names, None), 16, 0.2, 49
    )
    np.testing.assert_array_equal(poisoned.scaler.mean, base.scaler.mean)
    np.testing.assert_array_equal(poisoned.scaler.std, base.scaler.std)
    np.testing.assert_array_equal(poisoned.y_scale, base.y_scale)
    np.testing.assert_array_equal(poisoned.split.train_ends, base.split.train_ends)
    # the check can fail: poisoning one training row does move the scaler
    x[base.grid.row[base.split.train_ends[0]]] = 1e6
    moved = fold_data(
        StudentInputs(inp.symbol, inp.ts_ms, x, FEATURES, y, inp.label_names, None), 16, 0.2, 49
    )
    assert not np.array_equal(moved.scaler.std, base.scaler.std)


def test_window_ridge_recovers_a_linear_window_exactly():
    """Labels linear in the kept lags: the closed form returns those weights (alpha 0) and predicts them."""
    inp = make_inputs(n=400)
    fold = fold_data(inp, 16, 0.2, 49)
    cfg = WindowRidgeConfig(input_len=16, lag_stride=4, alpha=0.0)
    z = torch.from_numpy(fold.scaler.apply(fold.grid.x))
    windows = Windows(z, 16)
    rng = np.random.default_rng(1)
    true_w = rng.normal(size=(len(cfg.steps) * len(FEATURES), 2))
    ends = fold.split.train_ends
    y = np.full(fold.grid.y.shape, np.nan)
    probe = WindowRidge(cfg, true_w, np.array([0.5, -0.25]), [])
    y[ends] = probe.predict(windows, ends)
    fit = WindowRidge.fit(cfg, windows, ends, y)
    np.testing.assert_allclose(fit.weights, true_w, atol=1e-8)
    np.testing.assert_allclose(fit.intercept, [0.5, -0.25], atol=1e-8)
    assert list(cfg.steps) == [3, 7, 11, 15] and fit.rows == [len(ends), len(ends)]
    # a penalty shrinks the weights
    shrunk = WindowRidge.fit(WindowRidgeConfig(input_len=16, lag_stride=4, alpha=1.0), windows, ends, y)
    assert np.abs(shrunk.weights).sum() < 0.9 * np.abs(true_w).sum()


def config(tmp_path, name: str, path, **kw) -> BackboneConfig:
    base = dict(inputs=str(path), out_dir=str(tmp_path / name), backbone="patchtst", input_len=16, steps=20,
                global_batch=64, eval_every=10, seed=3, threads=1, model=SMALL["patchtst"])  # fmt: skip
    return BackboneConfig(**{**base, **kw})


def test_two_process_gloo_torchrun_matches_one_process_and_predict_reloads(tmp_path):
    path = tmp_path / "inputs.npz"
    inp = make_inputs()
    save_npz(inp, path)
    one = train(config(tmp_path, "one", path))
    cfg = config(tmp_path, "two", path)
    (tmp_path / "two.json").write_text(json.dumps(cfg.__dict__))
    launch = torchrun_command("quant_assets.ml.train_backbone", ["--config", str(tmp_path / "two.json")], 2)
    if launch.note:
        log.warning("torchrun test: %s", launch.note)
    r = subprocess.run(
        launch.command, env={**os.environ, **launch.env}, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "backbone.json").read_text())
    assert (two["world_size"], two["backend"], one["world_size"]) == (2, "gloo", 1)
    assert two["rank_weight_max_abs_diff"] == 0.0 and r.stdout.count('"kind": "done"') == 1
    a = torch.load(tmp_path / "one" / "backbone.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "backbone.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=DDP_ATOL, msg=lambda m, k=k: f"{k}: {m}")
    np.testing.assert_allclose([x[1] for x in two["loss"]], [x[1] for x in one["loss"]], rtol=1e-4)
    model, state, _ = load_backbone(tmp_path / "one")
    torch.manual_seed(3)
    init = type(model)(model.config).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 100 * DDP_ATOL  # training moved them
    # predict(): no window for a coin's first 15 rows, a finite prediction for every row after
    pred = predict(tmp_path / "one", inp)
    for s in ("BTCUSDT", "ETHUSDT"):
        rows = np.flatnonzero(inp.symbol == s)
        assert np.isnan(pred[rows[:15]]).all() and np.isfinite(pred[rows[15:]]).all()
    assert state["x_mean"].shape == (len(FEATURES),)


def test_a_failing_backbone_leaves_its_error_on_disk(tmp_path):
    path = tmp_path / "inputs.npz"
    save_npz(make_inputs(n=200), path)
    with pytest.raises(ValueError, match="patch_len 99"):
        train(config(tmp_path, "bad", path, model={**SMALL["patchtst"], "patch_len": 99}))
    err = json.loads((tmp_path / "bad" / "error_rank0.json").read_text())
    assert (
        err["backbone"] == "patchtst" and "patch_len 99" in err["error"] and "Traceback" in err["traceback"]
    )
