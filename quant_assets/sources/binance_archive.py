"""The Binance public data archive (data.binance.vision), or a local mirror in its layout.

Files are zipped CSVs, one per symbol and day or month, each with `<zip>.CHECKSUM` beside it
("<sha256>  <file name>"):

    data/spot/{daily,monthly}/klines/BTCUSDT/5m/BTCUSDT-5m-2025-10-20.zip
    data/futures/um/{daily,monthly}/klines/BTCUSDT/1h/BTCUSDT-1h-2025-10.zip
    data/futures/um/{daily,monthly}/premiumIndexKlines/BTCUSDT/5m/...
    data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2020-01.zip   (monthly only)
    data/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2023-01-01.zip          (daily only)
    data/futures/um/daily/bookDepth/BTCUSDT/BTCUSDT-bookDepth-2023-01-01.zip      (daily only)

Rules:
- A finished month the window covers whole is read from its monthly file (one request instead
  of ~30); the running month, partial windows and a month whose monthly file is missing use
  daily files.
- Every zip is checked against its CHECKSUM before it is opened; the zip must hold exactly one
  CSV named like the zip, which catches a file of another symbol or day put in the wrong place.
- A file that does not exist (HTTP 404, or absent from a local mirror) is a coverage gap,
  recorded in `ArchiveRead.missing_files`, not an error; days before a coin's listing (spot or
  perpetual, from `universe`) are not even asked for.
- A verified zip whose CSV holds no rows (empty, or a header only) is a gap too, listed in
  `ArchiveRead.empty_files`: its days are missing (REST may fill them), never silently empty.
  An empty monthly file falls back to the month's daily files like a missing one.
- Each row must lie in its file's day or month (see `binance_format`); rows of snapshot files
  that carry the first instant of the next day may meet that day's own rows: the later
  file's row wins, counted in `conflicts_resolved` (or `duplicates` when identical).
- Downloads are cached under `cache_dir` in the same layout, written to a temporary file and
  renamed (a crash never leaves a half file that looks whole), and re-verified on every read,
  so a re-run downloads nothing it already has. A 404 for a file whose period ended more than
  `MISSING_SETTLED` ago is remembered for `MISSING_TTL`: the archive publishes within a day or
  two, so such a file is not coming soon, and a 2018->now backfill would otherwise re-ask
  thousands of them (e.g. metrics before 2021-12) on every run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import polars as pl

from quant_assets.periods import next_month
from quant_assets.sources.binance_format import (
    KLINE_COLUMNS,
    ArchiveFormatError,
    ParseNotes,
    StringRows,
    book_depth_frame,
    funding_frame,
    is_number,
    is_time_or_number,
    klines_frame,
    metrics_frame,
    premium_frame,
)
from quant_assets.sources.binance_http import HttpStats, send_with_retries
from quant_assets.universe import COIN_BY_SYMBOL

DEFAULT_ROOT = "https://data.binance.vision"
DEFAULT_CACHE = ".cache/binance"
MISSING_SETTLED = dt.timedelta(days=7)
MISSING_TTL = dt.timedelta(days=30)

__all__ = [
    "DATASETS",
    "ArchiveFormatError",
    "ArchiveIntegrityError",
    "ArchiveRead",
    "ArchiveStore",
    "BinanceArchive",
    "unzip_csv",
    "verify",
]


class ArchiveIntegrityError(ValueError):
    """A zip that fails its checksum, is truncated or holds the wrong file; names the file."""


@dataclass(frozen=True)
class Dataset:
    name: str
    template: str  # relative path with {period} {symbol} {tf} {stamp}
    periods: tuple[str, ...]  # "monthly" and/or "daily", in order of preference
    ncols: int
    first_is_data: Callable[[str], bool]  # header detection on the first field
    perp: bool  # lives on the USD-M perpetual: starts at the perpetual's listing

    def rel(self, period: str, symbol: str, stamp: str, tf: str = "") -> str:
        return self.template.format(period=period, symbol=symbol, tf=tf, stamp=stamp)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "spot_klines",
            "data/spot/{period}/klines/{symbol}/{tf}/{symbol}-{tf}-{stamp}.zip",
            ("monthly", "daily"),
            KLINE_COLUMNS,
            is_number,
            perp=False,
        ),
        Dataset(
            "usdm_klines",
            "data/futures/um/{period}/klines/{symbol}/{tf}/{symbol}-{tf}-{stamp}.zip",
            ("monthly", "daily"),
            KLINE_COLUMNS,
            is_number,
            perp=True,
        ),
        Dataset(
            "premium_index",
            "data/futures/um/{period}/premiumIndexKlines/{symbol}/{tf}/{symbol}-{tf}-{stamp}.zip",
            ("monthly", "daily"),
            KLINE_COLUMNS,
            is_number,
            perp=True,
        ),
        Dataset(
            "funding",
            "data/futures/um/{period}/fundingRate/{symbol}/{symbol}-fundingRate-{stamp}.zip",
            ("monthly",),
            3,
            is_number,
            perp=True,
        ),
        Dataset(
            "metrics",
            "data/futures/um/{period}/metrics/{symbol}/{symbol}-metrics-{stamp}.zip",
            ("daily",),
            8,
            is_time_or_number,
            perp=True,
        ),
        Dataset(
            "book_depth",
            "data/futures/um/{period}/bookDepth/{symbol}/{symbol}-bookDepth-{stamp}.zip",
            ("daily",),
            4,
            is_time_or_number,
            perp=True,
        ),
    )
}


# -- fetching one file ---------------------------------------------------------------------------


@dataclass
class StoreStats:
    files_read: int = 0
    downloaded: int = 0
    cache_hits: int = 0
    missing: int = 0
    bytes_downloaded: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class ArchiveStore:
    """Verified bytes of archive files from an https root (with a disk cache) or a local directory."""

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str | None = None,
        *,
        http_timeout: float = 10.0,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
        max_workers: int = 8,
    ):
        root = root or os.environ.get("QUANT_ASSETS_ARCHIVE_ROOT") or DEFAULT_ROOT
        self.remote = root.startswith(("http://", "https://"))
        self.root = root.rstrip("/") if self.remote else os.path.abspath(root.removeprefix("file://"))
        self.cache_dir = os.path.abspath(cache_dir or os.environ.get("QUANT_ASSETS_CACHE") or DEFAULT_CACHE)
        self.max_retries, self.sleep, self.clock = max_retries, sleep, clock
        self._client = client
        self._timeout, self._max_workers = http_timeout, max_workers
        self.stats = StoreStats()
        self.http = HttpStats()
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self._timeout,
                follow_redirects=True,
                headers={"User-Agent": "quant_assets"},
                limits=httpx.Limits(max_connections=self._max_workers),
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def get(self, rel: str, period_end: dt.date | None = None) -> bytes | None:
        """The verified zip at `rel`, or None when the archive has no such file."""
        data = self._get_remote(rel, period_end) if self.remote else self._get_local(rel)
        with self._lock:
            if data is None:
                self.stats.missing += 1
            else:
                self.stats.files_read += 1
        return data

    def _get_local(self, rel: str) -> bytes | None:
        if not os.path.isdir(self.root):  # a mistyped root would otherwise read as "every file missing"
            raise FileNotFoundError(
                f"archive root {self.root!r} is not a directory (QUANT_ASSETS_ARCHIVE_ROOT)"
            )
        path = os.path.join(self.root, rel)
        if not os.path.exists(path):
            return None
        data = _read(path)
        checksum = _read(path + ".CHECKSUM") if os.path.exists(path + ".CHECKSUM") else None
        if checksum is None:
            raise ArchiveIntegrityError(
                f"{rel}: no {os.path.basename(rel)}.CHECKSUM beside it, cannot verify"
            )
        verify(rel, data, checksum)
        return data

    def _get_remote(self, rel: str, period_end: dt.date | None) -> bytes | None:
        cached = os.path.join(self.cache_dir, rel)
        if os.path.exists(cached) and os.path.exists(cached + ".CHECKSUM"):
            data, checksum = _read(cached), _read(cached + ".CHECKSUM")
            try:
                verify(rel, data, checksum)
                with self._lock:
                    self.stats.cache_hits += 1
                return data
            except ArchiveIntegrityError:
                pass  # a damaged cache entry is fetched again
        if self._remembered_missing(cached):
            return None
        url = f"{self.root}/{rel}"
        resp = self._send(url)
        if resp.status_code == 404:
            self._remember_missing(cached, period_end)
            return None
        data = resp.content
        ck = self._send(url + ".CHECKSUM")
        if ck.status_code == 404:
            raise ArchiveIntegrityError(f"{rel}: the archive has the zip but no .CHECKSUM, cannot verify it")
        verify(rel, data, ck.content)
        _atomic_write(cached + ".CHECKSUM", ck.content)
        _atomic_write(cached, data)
        with self._lock:
            self.stats.downloaded += 1
            self.stats.bytes_downloaded += len(data)
        return data

    def _send(self, url: str) -> httpx.Response:
        stats = HttpStats()
        try:
            return send_with_retries(
                self.client,
                url,
                None,
                max_retries=self.max_retries,
                sleep=self.sleep,
                stats=stats,
                ok_statuses=(200, 404),
            )
        finally:
            with self._lock:
                self.http.requests += stats.requests
                self.http.retries += stats.retries
                self.http.slept_s += stats.slept_s

    def _remembered_missing(self, cached: str) -> bool:
        marker = cached + ".missing"
        if not os.path.exists(marker):
            return False
        return self.clock() - os.path.getmtime(marker) < MISSING_TTL.total_seconds()

    def _remember_missing(self, cached: str, period_end: dt.date | None) -> None:
        if period_end is None:
            return
        today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
        if today - period_end > MISSING_SETTLED:
            _atomic_write(cached + ".missing", b"")


def verify(rel: str, data: bytes, checksum: bytes) -> None:
    """Raise ArchiveIntegrityError unless sha256(data) matches the CHECKSUM file's digest."""
    text = checksum.decode("ascii", errors="replace").strip()
    parts = text.split()
    if not parts or len(parts[0]) != 64:
        raise ArchiveIntegrityError(f"{rel}.CHECKSUM: not '<sha256>  <file name>': {text[:100]!r}")
    if len(parts) > 1 and parts[-1].lstrip("*") != os.path.basename(rel):
        raise ArchiveIntegrityError(f"{rel}.CHECKSUM: names {parts[-1]!r}, not {os.path.basename(rel)!r}")
    got = hashlib.sha256(data).hexdigest()
    if got != parts[0].lower():
        raise ArchiveIntegrityError(
            f"{rel}: sha256 {got} does not match its CHECKSUM {parts[0]} ({len(data)} bytes; truncated or altered)"
        )


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unzip_csv(rel: str, data: bytes) -> tuple[str, bytes]:
    """The one CSV inside the zip at `rel`; it must be named like the zip (same symbol, interval, day)."""
    expected = os.path.basename(rel)[: -len(".zip")] + ".csv"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ArchiveIntegrityError(
                    f"{rel}: expected one file {expected!r} in the zip, found {names}"
                )
            if os.path.basename(names[0]) != expected:
                raise ArchiveIntegrityError(
                    f"{rel}: the zip holds {names[0]!r}, not {expected!r} (a file of another symbol or day?)"
                )
            return expected, zf.read(names[0])
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise ArchiveIntegrityError(f"{rel}: not a readable zip ({exc}); truncated or corrupt") from exc


# -- reading a dataset over days -----------------------------------------------------------------


@dataclass
class ArchiveRead:
    """One dataset for one symbol over some days: rows, the days whose file was read, the gaps."""

    frame: pl.DataFrame
    covered: set[dt.date] = field(default_factory=set)
    covered_files: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)  # verified zips whose CSV holds no rows
    missing_days: set[dt.date] = field(default_factory=set)
    before_listing: set[dt.date] = field(default_factory=set)
    notes: ParseNotes = field(default_factory=ParseNotes)


@dataclass(frozen=True)
class _Job:
    rel: str
    period: str
    days: tuple[dt.date, ...]

    def span(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of the day or month the file covers."""
        first = self.days[0] if self.period == "daily" else self.days[0].replace(day=1)
        end = first + dt.timedelta(days=1) if self.period == "daily" else next_month(first)
        return (dt.datetime.combine(first, dt.time(), dt.UTC), dt.datetime.combine(end, dt.time(), dt.UTC))


EMPTY = "empty"  # a `_run` result: the file exists and verifies but holds no rows
# Datasets of snapshots whose files may overlap at a day boundary (see SNAPSHOT_PERIOD_GRACE).
SNAPSHOT_DATASETS = ("metrics", "book_depth")


class BinanceArchive:
    """Reads archive datasets into raw-table frames; see the module docstring for the rules."""

    def __init__(self, store: ArchiveStore, *, strict: bool = True, max_workers: int = 8):
        self.store = store
        self.strict = strict
        self.max_workers = max_workers

    def read(
        self,
        dataset: str,
        symbol: str,
        days: Iterable[dt.date],
        today: dt.date,
        tf: str = "",
        until: dt.datetime | None = None,
    ) -> ArchiveRead:
        """Rows of `dataset` for `symbol` on `days` (files for days after `today` are not asked for).

        `until` matters to bookDepth only, whose 5-minute rows are built from the snapshots seen by then.
        """
        ds = DATASETS[dataset]
        days = sorted(d for d in set(days) if d <= today)
        listed = _listing(symbol, ds.perp)
        before = {d for d in days if listed is not None and d < listed}
        days = [d for d in days if d not in before]
        out = ArchiveRead(frame=pl.DataFrame(), before_listing=before)
        jobs = self._plan(ds, symbol, tf, days, today)
        frames: list[pl.DataFrame] = []
        results = self._run(ds, symbol, tf, jobs, until)
        retry: list[_Job] = []
        for job, res in zip(jobs, results, strict=True):
            if res in (None, EMPTY) and job.period == "monthly" and "daily" in ds.periods:
                if res == EMPTY:
                    out.empty_files.append(job.rel)
                retry.extend(self._daily_jobs(ds, symbol, tf, job.days))
            else:
                self._collect(out, frames, job, res)
        for job, res in zip(retry, self._run(ds, symbol, tf, retry, until), strict=True):
            self._collect(out, frames, job, res)
        wanted = set(days)
        frame = pl.concat(frames, how="vertical") if frames else pl.DataFrame()
        if frame.height:
            date_col = "date" if "date" in frame.columns else None
            if date_col:
                frame = frame.filter(pl.col("date").is_in(sorted(wanted)))
            else:  # premium index rows have no date column yet
                frame = frame.filter(pl.col("ts").dt.date().is_in(sorted(wanted)))
            if ds.name in SNAPSHOT_DATASETS:
                frame = _merge_boundary_rows(frame, out.notes)
        out.frame = frame
        return out

    def _collect(self, out: ArchiveRead, frames: list, job: _Job, res) -> None:
        if res is None or res == EMPTY:
            (out.missing_files if res is None else out.empty_files).append(job.rel)
            out.missing_days.update(job.days)
            return
        frame, notes = res
        frames.append(frame)
        out.covered.update(job.days)
        out.covered_files.append(job.rel)
        out.notes.merge(notes)

    def _plan(self, ds: Dataset, symbol: str, tf: str, days: list[dt.date], today: dt.date) -> list[_Job]:
        jobs: list[_Job] = []
        by_month: dict[tuple[int, int], list[dt.date]] = {}
        for d in days:
            by_month.setdefault((d.year, d.month), []).append(d)
        for (y, m), month_days in by_month.items():
            last = next_month(dt.date(y, m, 1)) - dt.timedelta(days=1)
            listed = _listing(symbol, ds.perp)
            first = max(dt.date(y, m, 1), listed) if listed else dt.date(y, m, 1)
            whole = len(month_days) == (last - first).days + 1
            finished = last < today
            if "monthly" in ds.periods and ("daily" not in ds.periods or (whole and finished)):
                jobs.append(
                    _Job(ds.rel("monthly", symbol, f"{y:04d}-{m:02d}", tf), "monthly", tuple(month_days))
                )
            else:
                jobs.extend(self._daily_jobs(ds, symbol, tf, month_days))
        return jobs

    @staticmethod
    def _daily_jobs(ds: Dataset, symbol: str, tf: str, days: Iterable[dt.date]) -> list[_Job]:
        return [_Job(ds.rel("daily", symbol, d.isoformat(), tf), "daily", (d,)) for d in days]

    def _run(self, ds: Dataset, symbol: str, tf: str, jobs: list[_Job], until: dt.datetime | None) -> list:
        if not jobs:
            return []

        def one(job: _Job):
            span = job.span()
            data = self.store.get(job.rel, (span[1] - dt.timedelta(days=1)).date())  # the period's last day
            if data is None:
                return None
            name, text = unzip_csv(job.rel, data)
            return self._parse(ds, f"{job.rel}:{name}", text, symbol, tf, until, span)

        if len(jobs) == 1 or self.max_workers <= 1:
            return [one(j) for j in jobs]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(jobs))) as pool:
            return list(pool.map(one, jobs))

    def _parse(
        self,
        ds: Dataset,
        name: str,
        text: bytes,
        symbol: str,
        tf: str,
        until: dt.datetime | None,
        span: tuple[dt.datetime, dt.datetime],
    ) -> tuple[pl.DataFrame, ParseNotes] | str:
        notes = ParseNotes()
        src = StringRows.from_csv(text, name, ds.ncols, ds.first_is_data)
        if src.height == 0:
            return EMPTY
        src.period = span
        if ds.name in ("spot_klines", "usdm_klines"):
            market = "spot" if ds.name == "spot_klines" else "usdm"
            return klines_frame(src, symbol, market, tf, notes, strict=self.strict), notes
        if ds.name == "premium_index":
            return premium_frame(src, symbol, tf), notes
        if ds.name == "funding":
            return funding_frame(src, symbol), notes
        if ds.name == "metrics":
            return metrics_frame(src, symbol, notes), notes
        if ds.name == "book_depth":
            return book_depth_frame(src, symbol, notes, until), notes
        raise KeyError(ds.name)


def _merge_boundary_rows(frame: pl.DataFrame, notes: ParseNotes) -> pl.DataFrame:
    """One row per ts across a snapshot dataset's files: the later file's row wins (files are
    concatenated in day order), counted like the in-file conflicts."""
    n = frame.height
    frame = frame.unique(keep="first", maintain_order=True)
    notes.duplicates += n - frame.height
    n = frame.height
    frame = frame.unique(subset=["ts"], keep="last", maintain_order=True)
    notes.conflicts_resolved += n - frame.height
    return frame


def _listing(symbol: str, perp: bool) -> dt.date | None:
    coin = COIN_BY_SYMBOL.get(symbol)
    if coin is None:
        return None
    return coin.perp_listed if perp else coin.spot_listed
