"""Student training: torchrun DDP equals one process, seeds reproduce, the loss terms and dropout do their job."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest
import torch

from quant_assets.ml.launch import netns_available, torchrun_command
from quant_assets.ml.train_student import (
    StudentConfig,
    StudentInputs,
    autocast_dtype,
    load_config,
    load_inputs,
    load_student,
    predict,
    save_npz,
    setup_distributed,
    train,
)
from quant_assets.ml.tsmixer import TSMixer, TSMixerConfig

log = logging.getLogger(__name__)
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC in ms
STEP_MS = 300_000
FEATURES = ("ret_1", "vol_12", "funding_rate", "social_post_count_6h", "event_count_24h")
# Weights after a 2-rank run agree with the 1-process run to this: the two sum the batch's gradient
# in different orders (float32), nothing else differs. Adam divides each gradient by its running RMS,
# so for a weight whose gradient is near 0 that rounding shows as a visible step: seen here up to
# 1.05e-5 after 30 steps. One step more or less moves the weights by about lr = 1e-3 (checked below).
DDP_ATOL = 1e-4


def make_inputs(seed: int = 0, n: int = 700, signal: str = "ret_1", coins=("BTCUSDT", "ETHUSDT")):
    """Rows with a label the window can predict: the trailing 12-bar mean of one column, plus noise."""
    rng = np.random.default_rng(seed)
    syms, ts, xs, ys = [], [], [], []
    j = FEATURES.index(signal)
    for s in coins:
        x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
        trailing = np.convolve(x[:, j], np.ones(12) / 12)[:n]  # uses rows t-11..t only
        sig = 3 * trailing
        y = np.stack([sig + rng.normal(size=n), 2 * sig + rng.normal(size=n)], 1) * 1e-3
        y[-48:, 1] = np.nan  # like a purged frame: the last 4h labels are not known
        syms += [s] * n
        ts.append(T0 + STEP_MS * np.arange(n, dtype=np.int64))
        xs.append(x)
        ys.append(y)
    y = np.concatenate(ys).astype(np.float32)
    teacher = (y + rng.normal(size=y.shape) * 1e-3).astype(np.float32)
    return StudentInputs(np.array(syms), np.concatenate(ts), np.concatenate(xs), FEATURES, y,
                         ("label_1h", "label_4h"), teacher)  # fmt: skip


def config(tmp_path, name: str, inputs_path, **kw) -> StudentConfig:
    base = dict(inputs=str(inputs_path), out_dir=str(tmp_path / name), steps=30, global_batch=64,
                text_dropout=0.3, eval_every=10, seed=3, threads=1)  # fmt: skip
    return StudentConfig(**{**base, **kw})


def weights(out_dir) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / "student.pt", weights_only=True)["model"]


def run_watching_listeners(launch) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the launch; meanwhile record the TCP listening addresses of its process tree (`ss -ltnp`)."""

    def tree(pid: int) -> set[int]:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return {pid}.union(*(tree(int(k)) for k in kids))

    seen: set[str] = set()
    with (
        subprocess.Popen(launch.command, env={**os.environ, **launch.env}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True) as proc,
        ThreadPoolExecutor(1) as pool,
    ):  # fmt: skip
        reader = pool.submit(proc.communicate, timeout=300)
        while proc.poll() is None and shutil.which("ss"):
            pids = tree(proc.pid)
            for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
                if any(f"pid={p}," in line for p in pids):
                    seen.add(line.split()[3])
            time.sleep(0.2)
        out, err = reader.result()
    return subprocess.CompletedProcess(launch.command, proc.returncode, out, err), seen


@pytest.fixture
def inputs_npz(tmp_path):
    path = tmp_path / "inputs.npz"
    save_npz(make_inputs(), path)
    return path


def test_two_process_gloo_run_matches_one_process_on_the_same_global_batch(tmp_path, inputs_npz):
    one = train(config(tmp_path, "one", inputs_npz))
    cfg = config(tmp_path, "two", inputs_npz)
    (tmp_path / "two.json").write_text(json.dumps(cfg.__dict__))
    launch = torchrun_command("quant_assets.ml.train_student", ["--config", str(tmp_path / "two.json")], 2)
    if launch.note:
        log.warning("torchrun test: %s", launch.note)
    assert launch.netns == netns_available()
    result, listeners = run_watching_listeners(launch)
    assert result.returncode == 0, result.stderr[-3000:]
    if launch.netns:  # without the namespace this run showed '*:<port>' here (the TCPStore)
        assert listeners == set(), f"torchrun listened in the host namespace: {listeners}"
    two = json.loads((tmp_path / "two" / "student.json").read_text())
    assert (two["world_size"], two["backend"], one["world_size"]) == (2, "gloo", 1)
    # every rank ended with the same weights (rank 0 gathered them all)
    assert two["rank_weight_max_abs_diff"] == 0.0
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=DDP_ATOL, msg=lambda m, k=k: f"{k}: {m}")
    # and training moved them: the comparison is not between two untouched initialisations
    torch.manual_seed(3)
    init = TSMixer(TSMixerConfig(**one["model_config"])).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 100 * DDP_ATOL
    np.testing.assert_allclose([x[1] for x in two["loss"]], [x[1] for x in one["loss"]], rtol=1e-4)
    assert one["loss"][-1][1] < one["loss"][0][1]
    # the tolerance can fail: a run one step short is farther from the 1-process weights than it
    train(config(tmp_path, "short", inputs_npz, steps=29))
    short = weights(tmp_path / "short")
    assert max(float((short[k] - a[k]).abs().max()) for k in a) > 5 * DDP_ATOL
    assert '"kind": "done"' in result.stdout  # rank 0 alone reports
    assert result.stdout.count('"kind": "done"') == 1


def test_same_seed_same_weights_and_rows_after_the_training_rows_change_nothing(tmp_path, inputs_npz):
    a = train(config(tmp_path, "a", inputs_npz))
    b = train(config(tmp_path, "b", inputs_npz))
    assert a["weights_sha256"] == b["weights_sha256"] and a["loss"] == b["loss"]
    c = train(config(tmp_path, "c", inputs_npz, seed=4))
    assert c["weights_sha256"] != a["weights_sha256"]
    # Validation rows (after each coin's last training window) feed neither the scaling nor a step:
    # wrecking their features and labels leaves the trained weights bit for bit the same.
    inp = make_inputs()
    x, y = inp.x.copy(), inp.y.copy()
    for s in ("BTCUSDT", "ETHUSDT"):
        rows = np.flatnonzero(inp.symbol == s)[-40:]
        x[rows] = 1e6
        y[rows] = -1.0
    path = tmp_path / "wrecked.npz"
    save_npz(
        StudentInputs(inp.symbol, inp.ts_ms, x, inp.feature_names, y, inp.label_names, inp.teacher), path
    )
    d = train(config(tmp_path, "d", path))
    assert d["train_windows"] == a["train_windows"]
    assert d["weights_sha256"] == a["weights_sha256"]


def test_student_learns_the_signal_and_text_dropout_hides_text_columns(tmp_path):
    """The label is a trailing mean of a text column: seen, it is learned; always hidden, it cannot be."""
    path = tmp_path / "text.npz"
    inputs = make_inputs(seed=5, n=900, signal="social_post_count_6h")
    save_npz(inputs, path)
    common = dict(steps=120, global_batch=128, lr=3e-3, teacher_weight=0.0, val_fraction=0.25, eval_every=120)
    seen = train(config(tmp_path, "seen", path, text_dropout=0.0, **common))
    hidden = train(config(tmp_path, "hidden", path, text_dropout=1.0, **common))
    assert seen["text_features"] == ["social_post_count_6h", "event_count_24h"]
    # label_4h = 2 * signal + noise: the best possible IC is about 0.87; seen here 0.78-0.82 and 0.02-0.07
    ic_seen, ic_hidden = seen["eval"][-1]["ic_label_4h"], hidden["eval"][-1]["ic_label_4h"]
    assert ic_seen > 0.6, seen["eval"]
    assert abs(ic_hidden) < 0.2 and abs(hidden["eval"][-1]["ic_label_1h"]) < 0.2, hidden["eval"]
    # predict() reloads the saved student (weights_only) and scores rows with a full window
    pred = predict(tmp_path / "seen", inputs)
    for s in ("BTCUSDT", "ETHUSDT"):
        rows = np.flatnonzero(inputs.symbol == s)
        assert np.isnan(pred[rows[:95]]).all() and np.isfinite(pred[rows[95:]]).all()
    ok = np.isfinite(pred[:, 1]) & np.isfinite(inputs.y[:, 1])
    assert np.corrcoef(pred[ok, 1], inputs.y[ok, 1])[0, 1] > 0.6


def test_teacher_term_pulls_the_student_towards_the_teacher(tmp_path):
    """Labels and teacher disagree (label = -teacher): the weight on the teacher term decides whom the student follows."""
    inp = make_inputs(seed=7, n=800)
    path = tmp_path / "disagree.npz"
    save_npz(StudentInputs(inp.symbol, inp.ts_ms, inp.x, inp.feature_names, -inp.teacher, inp.label_names,
                           inp.teacher), path)  # fmt: skip
    common = dict(steps=100, global_batch=128, lr=3e-3, text_dropout=0.0, val_fraction=0.0)
    pull = train(config(tmp_path, "pull", path, teacher_weight=3.0, **common))
    neutral = train(config(tmp_path, "neutral", path, teacher_weight=0.0, **common))
    p_pull = predict(tmp_path / "pull", inp)[:, 0]
    p_neutral = predict(tmp_path / "neutral", inp)[:, 0]
    ok = np.isfinite(p_pull)
    # labels say -teacher, the teacher says +teacher: weight 3 on the teacher wins, weight 0 follows labels
    assert np.corrcoef(p_pull[ok], inp.teacher[ok, 0])[0, 1] > 0.3
    assert np.corrcoef(p_neutral[ok], inp.teacher[ok, 0])[0, 1] < -0.3
    assert pull["n_params"] == neutral["n_params"]


def test_parquet_and_npz_inputs_read_the_same_rows(tmp_path):
    inp = make_inputs(n=120)
    frame = pl.DataFrame({"symbol": inp.symbol, "ts": inp.ts_ms}).with_columns(
        pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC"),
        *(pl.Series(n, inp.x[:, i]) for i, n in enumerate(inp.feature_names)),
        *(pl.Series(n, inp.y[:, i]) for i, n in enumerate(inp.label_names)),
        pl.Series("teacher_1h", inp.teacher[:, 0]),
        pl.Series("teacher_4h", inp.teacher[:, 1]),
    )
    frame.write_parquet(tmp_path / "in.parquet")
    save_npz(inp, tmp_path / "in.npz")
    cfg = config(tmp_path, "x", tmp_path / "in.parquet")
    a, b = load_inputs(tmp_path / "in.parquet", cfg), load_inputs(tmp_path / "in.npz", cfg)
    assert a.feature_names == b.feature_names == FEATURES
    np.testing.assert_array_equal(a.ts_ms, b.ts_ms)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.teacher, b.teacher)
    with pytest.raises(ValueError, match=r"missing columns \['teacher_4h'\]"):
        frame.drop("teacher_4h").write_parquet(tmp_path / "bad.parquet")
        load_inputs(tmp_path / "bad.parquet", cfg)


def test_bad_configs_fail_with_a_message_naming_the_problem(tmp_path, inputs_npz):
    (tmp_path / "c.json").write_text(json.dumps({"inputs": "x", "out_dir": "y", "stepz": 3}))
    with pytest.raises(ValueError, match=r"unknown student config keys \['stepz'\]"):
        load_config(tmp_path / "c.json")
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(config(tmp_path, "big", inputs_npz, global_batch=4096))


def test_without_a_network_namespace_the_command_stays_on_loopback_and_says_so():
    launch = torchrun_command("quant_assets.ml.train_student", ["--config", "c.json"], 2, netns=False)
    assert launch.command[0] != "unshare" and "--master-addr=127.0.0.1" in launch.command
    assert launch.env["GLOO_SOCKET_IFNAME"] == "lo" and "all interfaces" in launch.note
    ns = torchrun_command("quant_assets.ml.train_student", ["--config", "c.json"], 2, netns=True)
    assert ns.command[:3] == ["unshare", "--net", "--"] and ns.note is None


def test_gpu_settings_resolve_to_bf16_on_cuda_only_and_a_cpu_run_stays_float32(tmp_path, inputs_npz):
    """The GPU path (bf16 autocast, windows on the device) is chosen by device; CPU keeps float32."""
    assert autocast_dtype(torch.device("cuda", 1), bf16=True) is torch.bfloat16
    assert autocast_dtype(torch.device("cuda", 0), bf16=False) is None
    assert autocast_dtype(torch.device("cpu"), bf16=True) is None
    d = setup_distributed("auto")  # WORLD_SIZE unset: one process, no process group
    assert (
        d.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        and d.world == 1
        and d.backend is None
    )
    assert setup_distributed("cpu").device == torch.device("cpu")
    fill = torch.utils.deterministic.fill_uninitialized_memory
    manifest = train(config(tmp_path, "cpu", inputs_npz, steps=3, device="cpu"))
    assert manifest["device"] == "cpu" and manifest["config"]["bf16"] is True
    # process-wide torch settings the run changes are put back for an in-process caller
    assert torch.utils.deterministic.fill_uninitialized_memory == fill
    model, _, _ = load_student(tmp_path / "cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())
