"""Typed run config of the model assets (what the launchpad shows), turned into the ml/ objects."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import dagster as dg

from quant_assets.ml.teacher import TeacherConfig
from quant_assets.ml.training_frame import DEFAULT_LOOKBACK_DAYS, FastWindow, ProductionWindow, TrainingWindow


class WindowConfig(dg.Config):
    """The training window before the cut-off.

    `production`: every row of the last `lookback_days` days (or of [start, end), ISO datetimes in
    UTC, both or neither); `fast`: the `rows_per_coin` most recent rows of each coin, for quick runs.
    """

    kind: Literal["production", "fast"] = "production"
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    start: str | None = None
    end: str | None = None
    rows_per_coin: int = 5_000

    def build(self) -> TrainingWindow:
        if self.kind == "fast":
            return FastWindow(rows_per_coin=self.rows_per_coin)

        def utc(s: str | None) -> dt.datetime | None:
            if s is None:
                return None
            t = dt.datetime.fromisoformat(s)
            return t if t.tzinfo else t.replace(tzinfo=dt.UTC)

        return ProductionWindow(lookback_days=self.lookback_days, start=utc(self.start), end=utc(self.end))


_T = TeacherConfig  # defaults come from the domain dataclass: one place for them


class TeacherSettings(dg.Config):
    """LightGBM, ridge and validation settings (quant_assets.ml.teacher.TeacherConfig)."""

    num_leaves: int = _T.num_leaves
    learning_rate: float = _T.learning_rate
    n_estimators: int = _T.n_estimators
    early_stopping_rounds: int = _T.early_stopping_rounds
    min_child_samples: int = _T.min_child_samples
    feature_fraction: float = _T.feature_fraction
    bagging_fraction: float = _T.bagging_fraction
    lambda_l2: float = _T.lambda_l2
    ridge_alpha: float = _T.ridge_alpha
    val_days: int = _T.val_days
    n_wf_folds: int = _T.n_wf_folds
    n_kfold: int = _T.n_kfold
    seed: int = _T.seed
    num_threads: int = _T.num_threads
    max_bin: int = _T.max_bin
    bin_sample_rows: int = _T.bin_sample_rows

    def build(self) -> TeacherConfig:
        return TeacherConfig(**self.model_dump())


class TeacherRunConfig(dg.Config):
    window: WindowConfig = WindowConfig()
    teacher: TeacherSettings = TeacherSettings()
    # Coins are fitted in this many spawned processes (each coin's fit is unchanged, so results do not
    # depend on it); 2 uses both cores of the reference machine: a 10-coin, 420-day partition in ~4 min.
    workers: int = 2


class StudentRunConfig(dg.Config):
    """Student training (quant_assets.ml.train_student.StudentConfig fields) and its launch.

    `window` is the student's training window (its teacher's out-of-fold column covers the teacher's
    window; rows outside it carry no teacher term). `cpu_procs`: torchrun processes when no GPU is
    present (with GPUs, one per GPU).
    """

    window: WindowConfig = WindowConfig()
    input_len: int = 96
    steps: int = 200
    global_batch: int = 256
    lr: float = 1e-3
    teacher_weight: float = 0.5
    text_dropout: float = 0.0
    coin_embedding: bool = True
    eval_every: int = 50
    seed: int = 0
    cpu_procs: int = 1
    threads: int = 1
    model: dict[str, int] = {}  # integer TSMixerConfig fields (d_series, mix_len, ff_dim, n_blocks, coin_dim)
    dropout: float = 0.0  # TSMixer dropout; 0 keeps DDP equal to one process (masks are per rank)
    # Fine-tuning: start from this student's weights and scaling instead of a fresh model. An MLflow
    # model URI (`models:/liquid_BTC_1h_student@champion`, `models:/liquid_BTC_1h_student/3`) or a local
    # directory holding student.pt + student.json. The fine-tune sensor sets it with `steps`.
    init_from: str | None = None
