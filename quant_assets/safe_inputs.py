"""Checks on values a user types (run config, CLI arguments, partition keys) before they reach a path or a query.

A lake table name becomes a directory under the lake root, a coin symbol and a horizon become part of
an MLflow registered-model name and of the registry's search filters (`name LIKE 'liquid_BTC_1h_%'`),
a partition key becomes a date range. Each check returns the value (normalised where it says so) or
raises ValueError naming the bad value and what is allowed, before anything is read or written.

Pure: no Dagster, no lake I/O (the import-linter domain contract), so `lake`, the resources and the
CLI can all call it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

from quant_assets.universe import HORIZONS, QUOTE, SYMBOLS

# Lowercase identifiers: no '/', '.', '..', '\\', spaces or quotes can get through into a path or a
# predicate. A leading '_' marks the lake's own bookkeeping tables (`_pins`).
TABLE_NAME = re.compile(r"_?[a-z][a-z0-9_]{0,62}")
# What the registry names carry: upper-case base and quote currencies (BTCUSDT), a lower-case kind.
SYMBOL_SYNTAX = re.compile(r"[A-Z0-9]{2,20}")
KIND = re.compile(r"[a-z][a-z0-9_]{0,40}")
MONTH = re.compile(r"(\d{4})-(\d{2})(?:-01)?")


def table_name(name: str) -> str:
    """A lake table name: lowercase letters, digits and `_` (it becomes a directory under the lake root)."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise ValueError(
            f"lake table name {name!r} is not allowed: lowercase letters, digits and '_' only, starting with "
            "a letter (it becomes a path under the lake root)"
        )
    return name


def symbol(value: str, universe: Sequence[str] = SYMBOLS) -> str:
    """A coin of the universe: 'btc', 'BTC' or 'BTCUSDT' -> 'BTCUSDT'; anything else is an error naming it."""
    s = str(value).strip().upper()
    s = s if s.endswith(QUOTE) else s + QUOTE
    if s not in universe:
        raise ValueError(
            f"symbol {value!r} is not in the universe: one of {', '.join(universe)} (the quote {QUOTE} optional)"
        )
    return s


def symbols(values: Iterable[str], universe: Sequence[str] = SYMBOLS) -> list[str]:
    """Every value a coin of the universe (normalised, order kept, repeats dropped); errors name all the bad ones."""
    out, bad = [], []
    for v in values:
        try:
            s = symbol(v, universe)
        except ValueError:
            bad.append(v)
            continue
        if s not in out:
            out.append(s)
    if bad:
        raise ValueError(f"symbols {bad!r} are not in the universe: one of {', '.join(universe)}")
    return out


def symbol_syntax(value: str) -> str:
    """A symbol that may be outside the configured universe (a test's coin) but is safe in a name or filter."""
    if not isinstance(value, str) or not SYMBOL_SYNTAX.fullmatch(value):
        raise ValueError(f"symbol {value!r} is not allowed: 2-20 upper-case letters or digits, e.g. BTCUSDT")
    return value


def horizon(value: str) -> str:
    if value not in HORIZONS:
        raise ValueError(f"horizon {value!r} is not one of {', '.join(HORIZONS)}")
    return value


def model_kind(value: str) -> str:
    """A model kind in a registered name (teacher, student, ...): a lowercase identifier."""
    if not isinstance(value, str) or not KIND.fullmatch(value):
        raise ValueError(
            f"model kind {value!r} is not allowed: lowercase letters, digits and '_', e.g. student"
        )
    return value


def month_key(value: str, keys: Sequence[str] | None = None) -> str:
    """A monthly partition key: '2026-10' or '2026-10-01' -> '2026-10-01'.

    With `keys` (the partitions definition's keys) the month must also be one of them: an error
    names the bad value and the first and last keys.
    """
    m = MONTH.fullmatch(str(value).strip())
    try:
        if m is None:
            raise ValueError
        key = dt.date(int(m[1]), int(m[2]), 1).isoformat()
    except ValueError:
        raise ValueError(
            f"month {value!r} is not a month: write 2026-10 or 2026-10-01 (partition keys are the month's first day)"
        ) from None
    if keys is not None and key not in keys:
        span = f"{keys[0]} .. {keys[-1]}" if keys else "none"
        raise ValueError(f"month {value!r} ({key}) is not a partition: the partitions are {span}")
    return key


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by `***` (for logs and metadata): postgresql://u:***@host/db."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
