"""Training frames: the rows of feature_matrix_main a model with a given cut-off may learn from.

Time rule. Row (symbol, ts) is the 5m bar that opens at ts and closes at ts + 5m. Its label for
horizon h (matrix.labels) is label_h = close[ts + h] / close[ts] - 1 - cost, where close[t] is the close
of the bar opening at t, i.e. the price at t + 5m. The label interval is therefore (ts + 5m, ts + 5m + h]
and the label is known at

    label_end(ts, h) = ts + STEP + h          (STEP = 5m; 1h -> ts + 65m, 4h -> ts + 245m)

A model whose cut-off is C (the start of its partition month) may learn label_h of a row iff
label_end(ts, h) < C, strictly: a bar closing exactly at C is part of month M. Example, C = 2024-02-01
00:00: the last 4h label kept is the row at 2024-01-31 19:50 (ends 23:55), the last 1h label the row
at 22:50. This is the purge; nothing else is dropped.

A frame of several horizons keeps the rows known for its shortest horizon and nulls each longer label
that is not yet known (a null label is never trained on), so one window of inputs serves every head.
Features of a kept row are always known before C: they use data up to ts + 5m < label_end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Literal

import polars as pl

from quant_assets.features.keys import LABEL_KEYS
from quant_assets.universe import CLOCK, HORIZONS, TIMEFRAMES

STEP = TIMEFRAMES[CLOCK]
DEFAULT_LOOKBACK_DAYS = 420


def label_end(ts: dt.datetime, horizon: str) -> dt.datetime:
    """When the label of the row opening at `ts` is known (see the module docstring)."""
    return ts + STEP + HORIZONS[horizon]


@dataclass(frozen=True)
class ProductionWindow:
    """All rows of the last `lookback_days` before the cut-off, or of [start, end) when both are set."""

    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    kind: Literal["production"] = "production"

    def __post_init__(self):
        if (self.start is None) != (self.end is None):
            raise ValueError(f"production window: give both start and end or neither, got {self}")
        if self.start is not None:
            _require_utc(self.start, "production window start")
            _require_utc(self.end, "production window end")
            if self.start >= self.end:
                raise ValueError(f"production window: start {self.start} is not before end {self.end}")
        elif self.lookback_days <= 0:
            raise ValueError(f"production window: lookback_days must be positive, got {self.lookback_days}")

    def bounds(self, cutoff: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """[lo, hi) of row ts; an explicit end past the cut-off would ask for rows the model cannot know."""
        if self.start is None:
            return cutoff - dt.timedelta(days=self.lookback_days), cutoff
        if self.end > cutoff:
            raise ValueError(f"production window end {self.end} is after the cut-off {cutoff}")
        return self.start, self.end

    def describe(self) -> str:
        if self.start is None:
            return f"production, {self.lookback_days} days"
        return f"production, {self.start.isoformat()} to {self.end.isoformat()}"


@dataclass(frozen=True)
class FastWindow:
    """The `rows_per_coin` most recent rows of each coin that pass the purge (for quick iteration)."""

    rows_per_coin: int = 5_000
    kind: Literal["fast"] = "fast"

    def __post_init__(self):
        if self.rows_per_coin <= 0:
            raise ValueError(f"fast window: rows_per_coin must be positive, got {self.rows_per_coin}")

    def describe(self) -> str:
        return f"fast, {self.rows_per_coin} rows per coin"


TrainingWindow = ProductionWindow | FastWindow


def window_from_dict(d: dict) -> TrainingWindow:
    """The window a typed run config (or a manifest's `window`) describes: {"kind": "production"|"fast", ...}."""
    d = dict(d)
    kind = d.pop("kind", "production")
    if kind == "fast":
        return FastWindow(**d)
    if kind != "production":
        raise ValueError(f"training window kind must be 'production' or 'fast', got {kind!r}")
    for k in ("start", "end"):
        if isinstance(d.get(k), str):
            d[k] = dt.datetime.fromisoformat(d[k])
    return ProductionWindow(**d)


@dataclass(frozen=True)
class CoinRows:
    rows: int
    first_ts: dt.datetime
    last_ts: dt.datetime
    labelled: dict[str, int]  # rows with a known, non-null label per horizon


@dataclass(frozen=True)
class TrainingManifest:
    cutoff: dt.datetime
    window: TrainingWindow
    horizons: tuple[str, ...]
    feature_keys_sha256: str
    n_features: int
    rows: int
    coins: dict[str, CoinRows]
    # Rows of the window's time range, before the cut-off, whose label for the horizon ends at or
    # after it: dropped (shortest horizon) or label nulled (longer ones).
    purged: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready (datetimes as ISO strings)."""

        def enc(v):
            if isinstance(v, dt.datetime):
                return v.isoformat()
            if isinstance(v, dict):
                return {k: enc(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [enc(x) for x in v]
            return v

        return enc(asdict(self))


@dataclass(frozen=True)
class TrainingFrame:
    frame: pl.DataFrame  # symbol, ts, *feature_keys, label_<h>...; sorted by (symbol, ts)
    manifest: TrainingManifest


class TooLittleHistory(ValueError):
    """The cut-off leaves fewer labelled rows than a model needs."""


def training_frame(
    matrix: pl.LazyFrame | pl.DataFrame,
    cutoff: dt.datetime,
    window: TrainingWindow,
    feature_keys: tuple[str, ...],
    horizons: tuple[str, ...] = tuple(HORIZONS),
    *,
    min_labelled_rows: int = 1,
    symbols: tuple[str, ...] | None = None,
) -> TrainingFrame:
    """The rows of `matrix` (shaped like feature_matrix_main) a model with cut-off `cutoff` may learn from.

    Keeps rows in the window whose label for the shortest of `horizons` ends strictly before the cut-off
    (module docstring), nulls each longer label that does not, selects symbol, ts, `feature_keys` and
    the label columns. Raises TooLittleHistory when a coin (each of `symbols` when given, else each coin
    with rows in the window) has fewer than `min_labelled_rows` rows with a known label for some horizon.
    """
    _require_utc(cutoff, "cut-off")
    cutoff = cutoff.astimezone(dt.UTC)
    if not horizons or any(h not in HORIZONS for h in horizons):
        raise ValueError(f"horizons must be a non-empty subset of {tuple(HORIZONS)}, got {horizons}")
    horizons = tuple(sorted(set(horizons), key=lambda h: HORIZONS[h]))
    labels = [f"label_{h}" for h in horizons]
    assert set(labels) <= set(LABEL_KEYS)
    lf = matrix.lazy()
    schema = lf.collect_schema()
    missing = [c for c in ("symbol", "ts", *feature_keys, *labels) if c not in schema]
    if missing:
        raise ValueError(f"feature_matrix: missing columns {missing} (of {len(schema)} present)")
    if not isinstance(schema["ts"], pl.Datetime) or schema["ts"].time_zone != "UTC":
        raise ValueError(f"feature_matrix: ts must be a UTC datetime, got {schema['ts']}")

    ts = pl.col("ts")
    # label_end < cutoff  <=>  ts < cutoff - STEP - h: kept rows are a per-coin prefix in time.
    known = {h: ts < cutoff - STEP - HORIZONS[h] for h in horizons}
    if isinstance(window, ProductionWindow):
        lo, hi = window.bounds(cutoff)
        in_range = (ts >= lo) & (ts < hi)
    else:
        in_range = ts < cutoff
    ranged = lf.filter(in_range)
    purged = ranged.select(
        *(((ts < cutoff) & ~known[h]).sum().alias(h) for h in horizons)
    ).collect()  # fmt: skip
    kept = ranged.filter(known[horizons[0]]).select(
        "symbol",
        "ts",
        *feature_keys,
        *(pl.when(known[h]).then(pl.col(f"label_{h}")).alias(f"label_{h}") for h in horizons),
    )
    if isinstance(window, FastWindow):
        recent = ts.rank("ordinal", descending=True).over("symbol") <= window.rows_per_coin
        kept = kept.filter(recent)
    frame = kept.sort("symbol", "ts").collect()

    stats = (
        frame.group_by("symbol")
        .agg(
            pl.len().alias("rows"),
            ts.min().alias("first_ts"),
            ts.max().alias("last_ts"),
            *(pl.col(f"label_{h}").is_not_null().sum().alias(h) for h in horizons),
        )
        .sort("symbol")
    )
    coins = {
        r["symbol"]: CoinRows(r["rows"], r["first_ts"], r["last_ts"], {h: r[h] for h in horizons})
        for r in stats.iter_rows(named=True)
    }
    manifest = TrainingManifest(
        cutoff=cutoff,
        window=window,
        horizons=horizons,
        feature_keys_sha256=hashlib.sha256("\n".join(feature_keys).encode()).hexdigest(),
        n_features=len(feature_keys),
        rows=frame.height,
        coins=coins,
        purged={h: int(purged[h][0]) for h in horizons},
    )
    _require_history(manifest, symbols, min_labelled_rows)
    return TrainingFrame(frame, manifest)


def _require_history(m: TrainingManifest, symbols: tuple[str, ...] | None, needed: int) -> None:
    where = f"cut-off {m.cutoff.isoformat()}, window {m.window.describe()}"
    wanted = symbols if symbols is not None else tuple(m.coins)
    if not wanted and needed > 0:
        raise TooLittleHistory(
            f"training frame ({where}): 0 rows before the cut-off, needs {needed} per coin"
        )
    short = []
    for s in wanted:
        c = m.coins.get(s)
        for h in m.horizons:
            have = c.labelled[h] if c is not None else 0
            if have < needed:
                short.append(f"{s} has {have} rows with a known label_{h}")
    if short:
        raise TooLittleHistory(
            f"training frame ({where}): too little history: {'; '.join(short)}; needs {needed} per coin "
            f"and horizon"
        )


def _require_utc(t: dt.datetime, what: str) -> None:
    if t.tzinfo is None or t.utcoffset() != dt.timedelta(0):
        raise ValueError(f"{what} must be a UTC datetime, got {t!r}")
