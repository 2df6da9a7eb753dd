"""One GET with bounded retries, shared by the archive downloader and the REST client.

- HTTP 429 (rate limited) and 418 (IP banned after ignoring 429s) carry `Retry-After` seconds:
  we sleep exactly that long, and refuse to sleep longer than `max_wait_s`, because a ban of
  hours must surface as an error rather than a hung run.
- Timeouts, transport errors and 5xx are retried with exponential back-off.
- Any other status outside `ok_statuses` is an error naming the URL and Binance's message.
`sleep` is injectable so tests exercise the back-off without waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


class RestError(RuntimeError):
    """An HTTP call that could not be completed; the message names the URL and why."""


@dataclass
class HttpStats:
    requests: int = 0
    retries: int = 0
    throttle_sleeps: int = 0
    slept_s: float = 0.0
    used_weight_1m: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "throttle_sleeps": self.throttle_sleeps,
            "slept_s": round(self.slept_s, 3),
            "used_weight_1m": dict(self.used_weight_1m),
        }


def send_with_retries(
    client: httpx.Client,
    url: str,
    params: dict | None,
    *,
    max_retries: int,
    sleep: Callable[[float], None],
    stats: HttpStats,
    max_wait_s: float = 300.0,
    ok_statuses: tuple[int, ...] = (200,),
) -> httpx.Response:
    """GET `url`, retrying 429/418, 5xx and transport errors up to `max_retries` times."""
    what = f"GET {url}" + (f" {params}" if params else "")
    last = ""
    for attempt in range(max_retries + 1):
        if attempt:
            stats.retries += 1
        try:
            stats.requests += 1
            resp = client.get(url, params=params)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            pause(sleep, stats, backoff(attempt))
            continue
        if resp.status_code in ok_statuses:
            return resp
        if resp.status_code in (418, 429):
            wait = _retry_after(resp, attempt)
            if wait > max_wait_s:
                raise RestError(
                    f"{what}: HTTP {resp.status_code} with Retry-After {wait:.0f}s, over the {max_wait_s:.0f}s "
                    "we are willing to wait (418 means the IP is banned for ignoring 429s)"
                )
            last = f"HTTP {resp.status_code} (Retry-After {wait:g}s)"
            pause(sleep, stats, wait)
            continue
        if resp.status_code >= 500:
            last = f"HTTP {resp.status_code}"
            pause(sleep, stats, backoff(attempt))
            continue
        raise RestError(f"{what}: HTTP {resp.status_code}: {_error_text(resp)}")
    raise RestError(f"{what}: gave up after {max_retries + 1} attempts; last failure: {last}")


def _retry_after(resp: httpx.Response, attempt: int) -> float:
    raw = resp.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else backoff(attempt)
    except ValueError:
        return backoff(attempt)


def backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2**attempt)


def pause(sleep: Callable[[float], None], stats: HttpStats, seconds: float) -> None:
    stats.slept_s += seconds
    sleep(seconds)


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and "msg" in body:
            return f"code {body.get('code')}: {body['msg']}"
    except ValueError:
        pass
    return resp.text[:200]
