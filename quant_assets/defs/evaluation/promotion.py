"""Promotion and rollback of models per coin and horizon, with MLflow registry aliases.

Plain functions over an `MlflowClient` and the lake (no Dagster): the `promote_model` and
`rollback_model` jobs (`defs/evaluation/jobs.py`) and `quant-assets promote/rollback` call them.

Aliases, per coin and horizon (registered models `liquid_{COIN}_{h}_{kind}`, one per kind):
- `candidate`: set by the `candidate_models` asset on a version whose gates all passed;
- `champion`: the model that trades. Exactly ONE per coin and horizon across kinds: promoting a
  student of BTC 1h while a teacher of BTC 1h is champion takes `champion` off the teacher;
- `previous`: the champion before the last promotion, also one per coin and horizon across kinds
  (it may sit on another kind's registered model than the champion).

Promotion of version v: the champion before it (any kind) becomes `previous` (the old `previous`
is dropped), v becomes `champion`. Only a candidate whose gates ALL passed is promoted: its
`candidate_models` row decides (`passed`, and every gate's verdict); a version without a row is
promoted only if it carries the `candidate` alias (which the gates set only on passing versions).
Anything else is refused with `PromotionRefused` naming the failed gates.

Rollback: `previous` becomes `champion` again, the rolled-back champion loses its alias (it is
not kept as `previous`: a second rollback must not re-promote the model just rolled back) and
there is no `previous` until the next promotion. Refused when there is no `previous`.

Both append one row to the `promotions` table (PROMOTION_SCHEMA): who, when, why, the version
that became champion and the one it replaced. `replaced_version` is the bare version number when
the replaced champion is the same registered model, `liquid_ETH_1h_teacher/3` when it is another
kind's, "" when there was none.

Alias changes are a few registry calls, not one transaction: they are ordered so that a crash in
between never leaves two champions (the old champion's alias goes before the new one is set) and
the row is appended after the registry changed (a row always describes a change that happened).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import polars as pl
from deltalake import write_deltalake
from deltalake.exceptions import CommitFailedError

from quant_assets import lake
from quant_assets.defs.evaluation.tables import (
    CANDIDATE_MODELS,
    CANDIDATE_SCHEMA,
    PROMOTION_SCHEMA,
    PROMOTIONS,
)
from quant_assets.defs.models.tracking import coin_name, registered_name
from quant_assets.universe import HORIZONS, QUOTE, SYMBOLS

CANDIDATE = "candidate"
CHAMPION = "champion"
PREVIOUS = "previous"
PROMOTE, ROLLBACK = "promote", "rollback"


class PromotionRefused(Exception):
    """A promotion or rollback that must not happen; the message says why (failed gates, no previous)."""


def resolve_symbol(symbol: str) -> str:
    """'btc', 'BTC' or 'BTCUSDT' -> 'BTCUSDT'; anything outside the universe is an error naming it."""
    s = str(symbol).strip().upper()
    s = s if s.endswith(QUOTE) else s + QUOTE
    if s not in SYMBOLS:
        raise ValueError(
            f"symbol {symbol!r} is not in the universe: one of {', '.join(coin_name(x) for x in SYMBOLS)} "
            f"(with or without {QUOTE})"
        )
    return s


def resolve_horizon(horizon: str) -> str:
    h = str(horizon).strip().lower()
    if h not in HORIZONS:
        raise ValueError(f"horizon {horizon!r} is not one of {', '.join(HORIZONS)}")
    return h


@dataclass(frozen=True)
class ModelRef:
    name: str  # registered model: liquid_BTC_1h_teacher
    version: str

    def qualified(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class Change:
    """What a promotion or rollback did; `row` is the promotions row it appended."""

    action: str
    symbol: str
    horizon: str
    champion: ModelRef
    replaced: ModelRef | None
    previous: ModelRef | None  # who carries `previous` afterwards
    row: dict


# --- registry reads ----------------------------------------------------------------------------


def _prefix(symbol: str, horizon: str) -> str:
    return f"liquid_{coin_name(symbol)}_{horizon}_"


def registered_models(client, symbol: str, horizon: str) -> list:
    """Every registered model of the coin and horizon (one per kind), with their aliases."""
    prefix = _prefix(symbol, horizon)
    # `_` is a LIKE wildcard: the prefix test below is the exact one
    found = _search_all(client, f"name LIKE '{prefix}%'")
    return sorted((m for m in found if m.name.startswith(prefix)), key=lambda m: m.name)


def _search_all(client, filter_string: str) -> list:
    out, token = [], None
    while True:
        page = client.search_registered_models(
            filter_string=filter_string, max_results=1000, page_token=token
        )
        out += list(page)
        token = page.token
        if not token:
            return out


def holder(client, symbol: str, horizon: str, alias: str) -> ModelRef | None:
    """The version carrying `alias` for the coin and horizon across kinds (None when none does).

    More than one holder means the registry was edited by hand: an error naming them all."""
    refs = [
        ModelRef(m.name, str(m.aliases[alias]))
        for m in registered_models(client, symbol, horizon)
        if alias in (m.aliases or {})
    ]
    if len(refs) > 1:
        raise PromotionRefused(
            f"{symbol} {horizon}: alias {alias!r} is on {len(refs)} models "
            f"({', '.join(r.qualified() for r in refs)}); exactly one is allowed: remove the wrong ones in MLflow"
        )
    return refs[0] if refs else None


def all_champions(client) -> list[dict]:
    """Every champion in the registry: name, kind, symbol, horizon, version and the `previous` of its
    coin and horizon (None when there is none)."""
    by_key: dict[tuple[str, str], dict] = {}
    for m in _search_all(client, "name LIKE 'liquid_%'"):
        parts = m.name.split("_", 3)  # liquid, COIN, horizon, kind
        if len(parts) != 4 or parts[2] not in HORIZONS:
            continue
        symbol, horizon, kind = parts[1] + QUOTE, parts[2], parts[3]
        entry = by_key.setdefault((symbol, horizon), {"champion": [], "previous": []})
        aliases = m.aliases or {}
        if CHAMPION in aliases:
            entry["champion"].append((m.name, kind, str(aliases[CHAMPION])))
        if PREVIOUS in aliases:
            entry["previous"].append(f"{m.name}/{aliases[PREVIOUS]}")
    out = []
    for (symbol, horizon), entry in sorted(by_key.items()):
        for name, kind, version in entry["champion"]:
            out.append({"registered_name": name, "kind": kind, "symbol": symbol, "horizon": horizon,
                        "version": version, "previous": entry["previous"][0] if entry["previous"] else None})  # fmt: skip
    return out


# --- candidate_models reads --------------------------------------------------------------------


def read_candidates(symbol: str | None = None, horizon: str | None = None) -> pl.DataFrame:
    """candidate_models rows (of one coin and horizon when given); an empty frame when the table is
    missing. A candidate evaluated twice keeps its latest evaluation."""
    if not lake.exists(CANDIDATE_MODELS):
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    lf = pl.scan_delta(lake.uri(CANDIDATE_MODELS), storage_options=lake.storage_options())
    if symbol is not None:
        lf = lf.filter(pl.col("symbol") == symbol)
    if horizon is not None:
        lf = lf.filter(pl.col("horizon") == horizon)
    df = lf.collect()
    missing = [c for c in CANDIDATE_SCHEMA if c not in df.columns]
    if missing:
        raise ValueError(f"lake table {CANDIDATE_MODELS!r} lacks columns {missing} of CANDIDATE_SCHEMA")
    df = df.select(pl.col(c).cast(t) for c, t in CANDIDATE_SCHEMA.items())
    return (
        df.sort("evaluated_at")
        .unique(["cutoff", "model", "symbol", "horizon"], keep="last")
        .sort("cutoff", "model", "symbol", "horizon")
    )


def gate_verdicts(gates_json: str | None) -> list[dict]:
    if not gates_json:
        return []
    gates = json.loads(gates_json)
    return gates if isinstance(gates, list) else []


def failed_gates(row: dict) -> list[str]:
    """'name (value V, threshold T: reason)' of each gate that did not pass."""
    out = []
    for g in gate_verdicts(row.get("gates")):
        if not g.get("passed"):
            reason = f": {g['reason']}" if g.get("reason") else ""
            out.append(f"{g.get('name')} (value {g.get('value')}, threshold {g.get('threshold')}{reason})")
    return out


def _describe(row: dict) -> str:
    return f"{row['registered_name']} v{row['registered_version']} (cut-off {str(row['cutoff'])[:10]})"


# --- promotion ---------------------------------------------------------------------------------


def select_candidate(
    client,
    symbol: str,
    horizon: str,
    kind: str | None = None,
    cutoff: str | None = None,
    version: str | None = None,
) -> tuple[ModelRef, dict | None]:
    """Which version a promotion means, and its candidate_models row (None when it has none).

    - `version` given: that version of `kind` (kind may be left out when the candidate rows name
      one kind for that version).
    - otherwise the candidate rows at `cutoff` (default: the latest cut-off with candidates) of
      `kind` (default: every kind); among several kinds, the passed candidate with the highest
      OOS IC. A later cut-off whose candidates all failed is refused, not skipped for an older one.
    - no candidate rows at all: the version carrying the `candidate` alias (of `kind`).
    """
    rows = read_candidates(symbol, horizon).filter(pl.col("registered_version") != "")
    if kind is not None:
        rows = rows.filter(pl.col("kind") == kind)
    if cutoff is not None:
        day = dt.date.fromisoformat(str(cutoff)[:10])
        rows = rows.filter(pl.col("cutoff").dt.date() == day)
    what = f"{symbol} {horizon}" + (f" {kind}" if kind else "") + (f" cut-off {cutoff}" if cutoff else "")
    if version is not None:
        rows = rows.filter(pl.col("registered_version") == str(version))
        kinds = sorted(set(rows["kind"].to_list()) | ({kind} if kind else set()))
        if len(kinds) != 1:
            raise PromotionRefused(
                f"{what}: version {version} names no single model kind "
                f"({'kinds ' + ', '.join(kinds) if kinds else 'no candidate row has it'}): set `kind`"
            )
        ref = ModelRef(registered_name(kinds[0], symbol, horizon), str(version))
        picked = rows.filter(pl.col("registered_name") == ref.name)
        return ref, (picked.sort("evaluated_at").row(-1, named=True) if picked.height else None)
    if rows.height:
        latest = rows.filter(pl.col("cutoff") == pl.col("cutoff").max())
        passed = latest.filter(pl.col("passed"))
        if not passed.height:
            refusals = [f"{_describe(r)}: {'; '.join(failed_gates(r)) or 'no gate verdicts recorded'}"
                        for r in latest.iter_rows(named=True)]  # fmt: skip
            raise PromotionRefused(
                f"{what}: no candidate at the latest cut-off passed its gates, nothing promoted. Failed: "
                + " | ".join(refusals)
            )
        row = passed.sort("oos_ic", nulls_last=False).row(-1, named=True)
        return ModelRef(row["registered_name"], row["registered_version"]), row
    refs = [
        ModelRef(m.name, str(m.aliases[CANDIDATE]))
        for m in registered_models(client, symbol, horizon)
        if CANDIDATE in (m.aliases or {}) and (kind is None or m.name.endswith(f"_{kind}"))
    ]
    if not refs:
        raise PromotionRefused(f"{what}: no candidate (no candidate_models row and no `candidate` alias)")
    if len(refs) > 1:
        raise PromotionRefused(
            f"{what}: `candidate` is on {len(refs)} kinds ({', '.join(r.qualified() for r in refs)}): set `kind`"
        )
    return refs[0], None


def _check_eligible(client, ref: ModelRef, row: dict | None, symbol: str, horizon: str) -> None:
    if row is not None:
        failed = failed_gates(row)
        if not row["passed"] or failed:
            gates = "; ".join(failed) if failed else "no gate verdicts recorded"
            raise PromotionRefused(
                f"{symbol} {horizon}: {_describe(row)} did not pass its gates, not promoted. Failed: {gates}"
            )
        return
    if CANDIDATE not in (_version(client, ref).aliases or []):
        raise PromotionRefused(
            f"{symbol} {horizon}: {ref.qualified()} has no candidate_models row and no `candidate` alias: "
            f"its gates never passed, not promoted"
        )


def promote(
    client,
    symbol: str,
    horizon: str,
    *,
    who: str,
    why: str,
    kind: str | None = None,
    cutoff: str | None = None,
    version: str | None = None,
    run_id: str = "",
    now: dt.datetime | None = None,
) -> Change:
    """Make a candidate whose gates all passed the champion of (symbol, horizon); see the module doc."""
    symbol, horizon = resolve_symbol(symbol), resolve_horizon(horizon)
    ref, row = select_candidate(client, symbol, horizon, kind, cutoff, version)
    _check_eligible(client, ref, row, symbol, horizon)
    mv = _version(client, ref)
    old = holder(client, symbol, horizon, CHAMPION)
    if old == ref:
        raise PromotionRefused(f"{symbol} {horizon}: {ref.qualified()} is already the champion")
    old_previous = holder(client, symbol, horizon, PREVIOUS)
    if old_previous is not None and (old is not None or old_previous == ref):
        client.delete_registered_model_alias(old_previous.name, PREVIOUS)
        old_previous = None
    if old is not None:
        client.set_registered_model_alias(old.name, PREVIOUS, old.version)
        if old.name != ref.name:  # same name: setting `champion` below moves it in one call
            client.delete_registered_model_alias(old.name, CHAMPION)
    client.set_registered_model_alias(ref.name, CHAMPION, ref.version)
    cut = row["cutoff"] if row is not None else _partition_cutoff(mv)
    out = _record(PROMOTE, symbol, horizon, ref, old, cut, who, why, run_id, now)
    return Change(PROMOTE, symbol, horizon, ref, old, old if old is not None else old_previous, out)


def rollback(
    client, symbol: str, horizon: str, *, who: str, why: str, run_id: str = "", now: dt.datetime | None = None
) -> Change:
    """Make `previous` the champion of (symbol, horizon) again; see the module doc."""
    symbol, horizon = resolve_symbol(symbol), resolve_horizon(horizon)
    prev = holder(client, symbol, horizon, PREVIOUS)
    if prev is None:
        raise PromotionRefused(
            f"{symbol} {horizon}: no `previous` model to roll back to (nothing was promoted over another "
            f"champion since the last rollback)"
        )
    mv = _version(client, prev)
    current = holder(client, symbol, horizon, CHAMPION)
    if current is not None and current.name != prev.name:
        client.delete_registered_model_alias(current.name, CHAMPION)
    client.delete_registered_model_alias(prev.name, PREVIOUS)
    client.set_registered_model_alias(prev.name, CHAMPION, prev.version)
    out = _record(ROLLBACK, symbol, horizon, prev, current, _partition_cutoff(mv), who, why, run_id, now)
    return Change(ROLLBACK, symbol, horizon, prev, current, None, out)


def _version(client, ref: ModelRef):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        raise PromotionRefused(f"{ref.qualified()} is not in the MLflow registry: {exc.message}") from exc


def _partition_cutoff(mv) -> dt.datetime | None:
    part = (mv.tags or {}).get("partition")
    try:
        return dt.datetime.fromisoformat(part).replace(tzinfo=dt.UTC) if part else None
    except ValueError:
        return None


# --- promotions table --------------------------------------------------------------------------


def _record(action, symbol, horizon, ref: ModelRef, replaced: ModelRef | None, cutoff, who, why, run_id, now):
    if replaced is None:
        replaced_version = ""
    else:
        replaced_version = replaced.version if replaced.name == ref.name else replaced.qualified()
    row = {
        "at": now or dt.datetime.now(dt.UTC),
        "action": action,
        "symbol": symbol,
        "horizon": horizon,
        "registered_name": ref.name,
        "version": ref.version,
        "replaced_version": replaced_version,
        "cutoff": cutoff,
        "who": who,
        "why": why,
        "dagster_run_id": run_id,
    }
    append_promotion(row)
    return row


def append_promotion(row: dict) -> None:
    """Append one row to the (small, unpartitioned, append-only) promotions table."""
    df = pl.DataFrame([row], schema=PROMOTION_SCHEMA)
    # appends never conflict with appends; only two first writes racing to create the table do
    for attempt in range(5):
        try:
            write_deltalake(lake.uri(PROMOTIONS), df.to_arrow(), mode="append",
                            storage_options=lake.storage_options())  # fmt: skip
            return
        except CommitFailedError:
            if attempt == 4:
                raise


def read_promotions() -> pl.DataFrame:
    """The promotions table, oldest first; an empty frame of its schema when nothing was recorded."""
    if not lake.exists(PROMOTIONS):
        return pl.DataFrame(schema=PROMOTION_SCHEMA)
    df = lake.read_table(PROMOTIONS)
    return df.select(pl.col(c).cast(t) for c, t in PROMOTION_SCHEMA.items()).sort("at")
