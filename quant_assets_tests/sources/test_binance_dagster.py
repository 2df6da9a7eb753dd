"""Dagster level: QUANT_ASSETS_SOURCE=binance materialises the raw tables from a mirror; checks pass,
and the source's switches (strict, QUANT_ASSETS_USE_REST) and the price check work through Dagster."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import dagster as dg
import polars as pl
import pytest
from binance_fixtures import (
    MIRROR_SYMBOLS,
    LocalServer,
    RestReplay,
    build_mirror,
    real_bars,
    spot_rel,
    write_archive_file,
)

from quant_assets import lake, quality
from quant_assets.defs.raw.assets import raw_tables
from quant_assets.defs.raw.checks import raw_checks
from quant_assets.resources import MarketDataSource, default_resources

TABLES = ("market_bars", "funding_rates", "derivatives_metrics", "orderbook_l2")
AUG4 = dt.date(2025, 8, 4)


def test_raw_assets_materialise_from_a_binance_mirror_and_their_checks_pass(tmp_path, monkeypatch):
    build_mirror(tmp_path / "mirror")
    # REST answers, but knows nothing: days the mirror lacks stay gaps instead of reaching the internet
    with LocalServer(RestReplay()) as rest:
        monkeypatch.setenv("QUANT_ASSETS_SOURCE", "binance")
        monkeypatch.setenv("QUANT_ASSETS_ARCHIVE_ROOT", str(tmp_path / "mirror"))
        monkeypatch.setenv("QUANT_ASSETS_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("QUANT_ASSETS_REST_SPOT", rest.url)
        monkeypatch.setenv("QUANT_ASSETS_REST_FUTURES", rest.url)
        result = dg.materialize(
            [raw_tables, *raw_checks],
            selection=dg.AssetSelection.assets(*TABLES),
            partition_key="2025-08-01",
            resources=default_resources(),
            instance=dg.DagsterInstance.ephemeral(),
        )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.asset_key.path[-1] for c in checks} == set(TABLES)
    failed = [(c.asset_key.path[-1], c.check_name) for c in checks if not c.passed]
    assert failed == []
    assert len(checks) == sum(len(quality.rule_names(t)) for t in TABLES)  # every rule ran
    bars = lake.read("market_bars", "2025-08-01", "2025-09-01")
    assert sorted(bars["symbol"].unique()) == sorted(MIRROR_SYMBOLS)
    assert bars["date"].min() == dt.date(2025, 8, 3) and bars["date"].max() == dt.date(2025, 8, 6)
    for table in TABLES:
        assert lake.read(table, "2025-08-01", "2025-09-01").height > 0, table
    metrics = lake.read("derivatives_metrics", "2025-08-01", "2025-09-01")
    # the sample starts at 02:10 on Aug 3: no premium bar closes at that first metrics row, per coin
    assert metrics["basis"].null_count() == len(MIRROR_SYMBOLS)
    assert metrics.select(pl.col("available_at") == pl.col("ts") + dt.timedelta(minutes=5)).to_series().all()
    mat = result.asset_materializations_for_node("raw_tables")
    assert {m.metadata["source"].value for m in mat} == {"binance"}
    assert {p for p, _ in rest.requests} <= {
        "/api/v3/klines",
        "/fapi/v1/klines",
        "/fapi/v1/premiumIndexKlines",
        "/fapi/v1/fundingRate",
    }


def _materialise(tmp_path, monkeypatch, rest_url: str, **kw) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("QUANT_ASSETS_SOURCE", "binance")
    monkeypatch.setenv("QUANT_ASSETS_ARCHIVE_ROOT", str(tmp_path / "mirror"))
    monkeypatch.setenv("QUANT_ASSETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("QUANT_ASSETS_REST_SPOT", rest_url)
    monkeypatch.setenv("QUANT_ASSETS_REST_FUTURES", rest_url)
    return dg.materialize(
        [raw_tables, *raw_checks],
        selection=dg.AssetSelection.assets("market_bars"),
        partition_key="2025-08-01",
        resources=default_resources(),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kw,
    )


def _set_spot5_field(root, day: dt.date, row: int, col: int, value: str) -> None:
    rel = spot_rel("BTCUSDT", "5m", day)
    with zipfile.ZipFile(io.BytesIO((root / rel).read_bytes())) as zf:
        lines = zf.read(zf.namelist()[0]).decode().splitlines()
    fields = lines[row - 1].split(",")
    fields[col] = value
    lines[row - 1] = ",".join(fields)
    write_archive_file(root, rel, "\n".join(lines) + "\n")


def test_strict_false_from_dagster_run_config_quarantines_instead_of_failing(tmp_path, monkeypatch):
    mirror = build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"])
    _set_spot5_field(mirror, AUG4, 17, 3, "-1.00000000")  # a negative low: an implausible bar
    with LocalServer(RestReplay()) as rest:
        strict = _materialise(tmp_path, monkeypatch, rest.url)
        lenient = _materialise(
            tmp_path,
            monkeypatch,
            rest.url,
            run_config={"resources": {"source": {"config": {"strict": False}}}},
        )
    assert not strict.success
    [failure] = [e for e in strict.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.cause.message
    assert "BTCUSDT-5m-2025-08-04.csv row 17 field 'low': -1.0 is not a positive price" in message
    assert lenient.success
    [mat] = lenient.asset_materializations_for_node("raw_tables")
    report = mat.metadata["source_report"].value
    assert report["quarantined"] == 1
    assert report["quarantine"][0]["row"] == 17 and report["quarantine"][0]["field"] == "low"


def test_quant_assets_use_rest_0_keeps_an_offline_mirror_off_rest(tmp_path, monkeypatch):
    build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"])
    with LocalServer(RestReplay()) as rest:
        monkeypatch.setenv("QUANT_ASSETS_USE_REST", "0")
        result = _materialise(tmp_path, monkeypatch, rest.url)
    assert result.success
    assert rest.requests == []  # the mirror lacks most of August: those days stay gaps
    [mat] = result.asset_materializations_for_node("raw_tables")
    gaps = mat.metadata["source_report"].value["gap_days"]
    assert gaps["BTCUSDT spot 5m"][:2] == ["2025-08-01", "2025-08-02"]
    assert "2025-08-04" not in gaps["BTCUSDT spot 5m"]
    monkeypatch.setenv("QUANT_ASSETS_USE_REST", "maybe")
    with pytest.raises(ValueError, match="QUANT_ASSETS_USE_REST='maybe'"):
        MarketDataSource(kind="binance").build()


def test_a_bar_at_another_coins_price_fails_the_price_continuity_check(tmp_path, monkeypatch):
    mirror = build_mirror(tmp_path / "mirror", symbols=["BTCUSDT"])
    # the 12:30 bar of Aug 4 (row 151 of the day's file) carries ETH's prices, times untouched
    eth = real_bars("ETHUSDT", "5m").filter(pl.col("ts") == dt.datetime(2025, 8, 4, 12, 30, tzinfo=dt.UTC))
    for col, name in ((1, "open"), (2, "high"), (3, "low"), (4, "close")):
        _set_spot5_field(mirror, AUG4, 151, col, f"{eth[name].item():.8f}")
    with LocalServer(RestReplay()) as rest:
        result = _materialise(tmp_path, monkeypatch, rest.url)
    assert not result.success  # the blocking check stops the run
    failed = {c.check_name: c for c in result.get_asset_check_evaluations() if not c.passed}
    assert set(failed) == {"price_continuity"}
    assert failed["price_continuity"].metadata["failed_rows"].value == 1
    sample = failed["price_continuity"].metadata["failing_rows_sample"].value
    assert (
        "2025-08-04 12:30:00 UTC | BTCUSDT | spot" in sample
        and "opens -96.9% from the previous close" in sample
    )
