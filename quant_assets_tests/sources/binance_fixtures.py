"""Helpers for the Binance tests: an archive mirror built from the real sample bars, local servers.

Imported by the test modules (`from binance_fixtures import ...`); nothing here is a pytest
fixture, so it cannot collide with another helper's conftest.

The mirror follows the real archive's layout and quirks: spot files from 2025 carry epoch
MICROseconds and no header; USD-M kline files carry a header and milliseconds; metrics and
bookDepth use text times; every zip has a `.CHECKSUM` with its sha256. Fields the sample CSVs
lack (quote volume, trade count, taker volumes) are derived deterministically from the bar.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import polars as pl

from quant_assets_tests.real_data import REAL_DATA

REAL = REAL_DATA
SPOT_CSV = REAL / "binance_spot"
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
METRICS_HEADER = (
    "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio,"
    "sum_toptrader_long_short_ratio,count_long_short_ratio,sum_taker_long_short_vol_ratio"
)
FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
MIRROR_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MIRROR_DAYS = tuple(dt.date(2025, 8, d) for d in (3, 4, 5, 6))  # the days the real 5m sample touches
USDM_PREMIUM = 0.0004  # usdm bars = spot bars * (1 + this), rounded to the tick


# -- real bars ------------------------------------------------------------------------------------


def real_bars(symbol: str, timeframe: str) -> pl.DataFrame:
    """The real sample bars (ts, open, high, low, close, volume), ts as UTC datetimes."""
    df = pl.read_csv(SPOT_CSV / f"{symbol}_{timeframe}.csv", try_parse_dates=True)
    return (
        df.rename({c: c.lower() for c in df.columns})
        .rename({"date": "ts"})
        .with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    )


def _d8(x: float) -> str:
    return f"{x:.8f}"


def kline_rows(bars: pl.DataFrame, timeframe: str, *, micro: bool = False) -> list[list[str]]:
    """Bars -> archive 12-column kline rows (strings), times in ms or us."""
    step_ms = {"5m": 300_000, "1h": 3_600_000}[timeframe]
    unit = 1000 if micro else 1
    out = []
    for r in bars.iter_rows(named=True):
        t = int(r["ts"].timestamp() * 1000)
        vol = r["volume"]
        taker = round(vol * 0.45, 8)
        out.append(
            [
                str(t * unit),
                _d8(r["open"]),
                _d8(r["high"]),
                _d8(r["low"]),
                _d8(r["close"]),
                _d8(vol),
                str((t + step_ms) * unit - 1),
                _d8(round(vol * r["close"], 8)),
                str(int(vol * 10) % 997 + 1),
                _d8(taker),
                _d8(round(taker * r["close"], 8)),
                "0",
            ]
        )
    return out


def usdm_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """A perpetual's bars derived from the spot bars: prices * (1 + USDM_PREMIUM), volume * 3."""
    f = 1 + USDM_PREMIUM
    return bars.with_columns(
        *(pl.col(c) * f for c in ("open", "high", "low", "close")), pl.col("volume") * 3
    ).with_columns(*(pl.col(c).round(2) for c in ("open", "high", "low", "close")))


def csv_text(rows: list[list[str]], header: str | None = None) -> str:
    lines = ([header] if header else []) + [",".join(r) for r in rows]
    return "\n".join(lines) + "\n"


# -- archive files ------------------------------------------------------------------------------


def zip_bytes(inner_name: str, text: str | bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(inner_name, text)
    return buf.getvalue()


def write_archive_file(
    root: Path,
    rel: str,
    text: str | bytes,
    *,
    inner_name: str | None = None,
    data: bytes | None = None,
    checksum_of: bytes | None = None,
    checksum: bool = True,
) -> Path:
    """Write `rel` (a .zip holding `text`) and its .CHECKSUM under `root`.

    `data` replaces the zip bytes (e.g. a truncated zip); `checksum_of` is what the CHECKSUM
    describes (default: the bytes written), so a mismatch can be staged.
    """
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    name = inner_name or path.name[: -len(".zip")] + ".csv"
    payload = data if data is not None else zip_bytes(name, text)
    path.write_bytes(payload)
    if checksum:
        digest = hashlib.sha256(checksum_of if checksum_of is not None else payload).hexdigest()
        (root / (rel + ".CHECKSUM")).write_text(f"{digest}  {path.name}\n")
    return path


def spot_rel(symbol: str, tf: str, day: dt.date, period: str = "daily") -> str:
    stamp = day.isoformat() if period == "daily" else day.strftime("%Y-%m")
    return f"data/spot/{period}/klines/{symbol}/{tf}/{symbol}-{tf}-{stamp}.zip"


def um_rel(kind: str, symbol: str, day: dt.date, tf: str | None = None, period: str = "daily") -> str:
    stamp = day.isoformat() if period == "daily" else day.strftime("%Y-%m")
    if tf:
        return f"data/futures/um/{period}/{kind}/{symbol}/{tf}/{symbol}-{tf}-{stamp}.zip"
    return f"data/futures/um/{period}/{kind}/{symbol}/{symbol}-{kind}-{stamp}.zip"


def day_slice(bars: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    return bars.filter(pl.col("ts").dt.date() == day)


def metrics_rows(symbol: str, bars5: pl.DataFrame) -> list[list[str]]:
    """A metrics file's rows for the bars' 5m times, values derived from the bars."""
    rows = []
    oi = 50_000.0
    for r in bars5.iter_rows(named=True):
        oi += r["volume"] * 0.01
        rows.append(
            [
                r["ts"].strftime("%Y-%m-%d %H:%M:%S"),
                symbol,
                f"{oi:.4f}",
                f"{oi * r['close']:.8f}",
                "1.85000000",
                "1.42000000",
                f"{1 + (r['close'] - r['open']) / r['open'] * 50:.8f}",
                "0.97000000",
            ]
        )
    return rows


def book_depth_rows(bars5: pl.DataFrame, every_s: int = 60) -> list[list[str]]:
    """bookDepth rows: a snapshot every `every_s` seconds within each bar, +-1..5% bands from its close."""
    rows = []
    for r in bars5.iter_rows(named=True):
        for k in range(0, 300, every_s):
            t = r["ts"] + dt.timedelta(seconds=k + 7)
            stamp = t.strftime("%Y-%m-%d %H:%M:%S")
            for pct in (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5):
                depth = abs(pct) * 100.0 + k / 60
                rows.append([stamp, f"{pct:.2f}", f"{depth:.8f}", f"{depth * r['close']:.8f}"])
    return rows


def funding_rows(month_start: dt.date, days: int) -> list[list[str]]:
    """Three settlements a day with a few ms of jitter, rates derived from the time."""
    rows = []
    for d in range(days):
        for h in (0, 8, 16):
            t = dt.datetime.combine(month_start + dt.timedelta(days=d), dt.time(h), dt.UTC)
            ms = int(t.timestamp() * 1000) + (d * 3 + h) % 7
            rows.append([str(ms), "8", f"{0.0001 - (d % 5) * 0.00002:.8f}"])
    return rows


def build_mirror(root: Path, symbols=MIRROR_SYMBOLS, days=MIRROR_DAYS) -> Path:
    """An archive mirror under `root` for `symbols` and `days`, in the real layout."""
    for symbol in symbols:
        b5, b1 = real_bars(symbol, "5m"), real_bars(symbol, "1h")
        u5, u1 = usdm_bars(b5), usdm_bars(b1)
        for day in days:
            s5, s1, p5, p1 = (day_slice(x, day) for x in (b5, b1, u5, u1))
            if s5.height == 0:
                continue
            # spot from 2025: microseconds, no header (as published)
            write_archive_file(root, spot_rel(symbol, "5m", day), csv_text(kline_rows(s5, "5m", micro=True)))
            write_archive_file(root, spot_rel(symbol, "1h", day), csv_text(kline_rows(s1, "1h", micro=True)))
            # USD-M: milliseconds with a header row
            write_archive_file(
                root, um_rel("klines", symbol, day, "5m"), csv_text(kline_rows(p5, "5m"), KLINE_HEADER)
            )
            write_archive_file(
                root, um_rel("klines", symbol, day, "1h"), csv_text(kline_rows(p1, "1h"), KLINE_HEADER)
            )
            prem = [r[:5] + ["0"] * 7 for r in kline_rows(p5, "5m")]
            closes = dict(zip(s5["ts"].to_list(), s5["close"].to_list(), strict=True))
            for r, t, c in zip(prem, p5["ts"].to_list(), p5["close"].to_list(), strict=True):
                r[4] = f"{c / closes[t] - 1:.8f}"
                r[1] = r[2] = r[3] = r[4]
            write_archive_file(
                root, um_rel("premiumIndexKlines", symbol, day, "5m"), csv_text(prem, KLINE_HEADER)
            )
            write_archive_file(
                root, um_rel("metrics", symbol, day), csv_text(metrics_rows(symbol, s5), METRICS_HEADER)
            )
            write_archive_file(
                root,
                um_rel("bookDepth", symbol, day),
                csv_text(book_depth_rows(s5), "timestamp,percentage,depth,notional"),
            )
        month = days[0].replace(day=1)
        write_archive_file(
            root,
            um_rel("fundingRate", symbol, month, period="monthly"),
            csv_text(funding_rows(month, 31), FUNDING_HEADER),
        )
    return root


# -- local HTTP servers ---------------------------------------------------------------------------

Handler = Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]


class LocalServer:
    """An http.server on 127.0.0.1 (port 0) in a thread; `handler(path, query)` makes each response.

    `requests` lists every (path, query) served, so tests can count what was downloaded.
    """

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class _H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                outer.requests.append((parts.path, query))
                status, headers, body = outer.handler(parts.path, query)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]


def directory_handler(root: Path) -> Handler:
    """Serve files under `root` like the archive's CDN: 200 with the bytes, or 404."""

    def handle(path: str, query: dict[str, str]):
        f = root / path.lstrip("/")
        if f.is_file():
            return 200, {"Content-Type": "application/zip"}, f.read_bytes()
        return 404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>"

    return handle


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None):
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def env_without(keys: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in keys}


# -- a REST replay server ------------------------------------------------------------------------


def rest_kline(row: list[str]) -> list:
    """An archive kline row (strings) -> the REST JSON shape: ints for times and trades, strings else."""
    return [int(row[0]), *row[1:6], int(row[6]), row[7], int(row[8]), row[9], row[10], row[11]]


class RestReplay:
    """Answers Binance REST paths from stored rows, honouring startTime/endTime/limit like Binance.

    `klines[(path, symbol, interval)]` are REST kline arrays; `records[(path, symbol)]` are JSON
    objects with a time field (`fundingTime` or `timestamp`); `depth[symbol]` is a depth body.
    `queued[path]` holds canned responses served (and consumed) before the real answer: a 429
    with Retry-After, a 500... `weight` is reported in X-MBX-USED-WEIGHT-1m.
    """

    TIME_FIELD = {"/fapi/v1/fundingRate": "fundingTime"}

    def __init__(self):
        self.klines: dict[tuple[str, str, str], list[list]] = {}
        self.records: dict[tuple[str, str], list[dict]] = {}
        self.depth: dict[str, dict] = {}
        self.queued: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.weight = 1
        self.max_limit: dict[str, int] = {}

    def __call__(self, path: str, q: dict[str, str]):
        if self.queued.get(path):
            return self.queued[path].pop(0)
        headers = {"X-MBX-USED-WEIGHT-1m": str(self.weight)}
        symbol = q.get("symbol", "")
        lo, hi = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
        limit = min(int(q.get("limit", 500)), self.max_limit.get(path, 10**9))
        if path == "/fapi/v1/depth":
            if symbol not in self.depth:
                return json_response({"code": -1121, "msg": "Invalid symbol."}, 400, headers)
            return json_response(self.depth[symbol], headers=headers)
        key = (path, symbol, q.get("interval", ""))
        if key in self.klines:
            rows = [r for r in self.klines[key] if lo <= r[0] <= hi][:limit]
            return json_response(rows, headers=headers)
        if (path, symbol) in self.records:
            tf = self.TIME_FIELD.get(path, "timestamp")
            rows = [r for r in self.records[(path, symbol)] if lo <= int(r[tf]) <= hi][:limit]
            return json_response(rows, headers=headers)
        if path.startswith(("/api/", "/fapi/", "/futures/")):
            return json_response([], headers=headers)
        return 404, {}, b"not found"
