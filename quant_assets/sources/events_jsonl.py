"""A user's news/social feed as JSON lines -> the events, event_links and entities tables.

One JSON object per line (blank lines are skipped):

    {"event_id": "cd-20240301-1",              # optional; default: a hash of ts, source and text
     "ts": "2024-03-01T12:00:00Z",             # when it happened: ISO 8601 with offset, or epoch ms
     "available_at": "2024-03-01T12:03:10Z",   # when a trader could first see it; >= ts
     "source": "coindesk",                     # non-empty string
     "source_tier": 1,                         # 1 (most reliable) .. 5
     "event_type": "regulatory",               # one of schemas.EVENT_TYPES
     "confidence_score": 0.8,                  # 0 .. 1
     "sentiment_score": -0.6,                  # optional, -1 .. 1; absent or null: features read the text
     "entities": [                             # what it is about; may be empty
        {"entity_id": "coin:BTC", "entity_type": "coin", "name": "Bitcoin",
         "symbol": "BTCUSDT",                  # optional (null for a regulator, an exchange...)
         "relevance": 1.0}],                   # optional, 0 .. 1, default 1
     "payload": {"text": "...", "engagement": 120, "author": "...", "platform": "x", "url": "..."}}
                                               # text required; the other payload fields optional

Rows: events (date = UTC day of ts), event_links (one per entity of an event, date = the event's
date), entities (first_seen = the day of the first visible event that names it; restated in every
month from then on, date = the later of first_seen and the month's first day). Every error names the
file, the line and the field. Naive times are rejected: a feed's local time would shift every
event by hours and silently break the no-look-ahead rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math

import polars as pl

from quant_assets.schemas import EVENT_TYPES, PAYLOAD, RAW_TABLES, TS
from quant_assets.sources.base import restate_catalogue

EVENT_TABLES = ("events", "event_links", "entities")
PAYLOAD_FIELDS = tuple(f.name for f in PAYLOAD.fields)


class EventFeedError(ValueError):
    """A malformed feed line; the message names the file, line and field."""


def load_events_jsonl(path: str) -> dict[str, pl.DataFrame]:
    """All rows of the feed at `path` (no window): events, event_links, entities."""
    events, links, entities = [], [], {}
    seen_ids: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EventFeedError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise EventFeedError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            ev = _event(obj, where)
            if ev["event_id"] in seen_ids:
                raise EventFeedError(
                    f"{where} field 'event_id': {ev['event_id']!r} already used on line {seen_ids[ev['event_id']]}"
                )
            seen_ids[ev["event_id"]] = n
            events.append(ev)
            for i, ent in enumerate(_list(obj, "entities", where)):
                e = _entity(ent, where, f"entities[{i}]")
                links.append(
                    {
                        "event_id": ev["event_id"],
                        "entity_id": e["entity_id"],
                        "symbol": e["symbol"],
                        "relevance": e["relevance"],
                        "ts": ev["ts"],
                        "available_at": ev["available_at"],
                    }
                )
                known = entities.get(e["entity_id"])
                desc = (e["entity_type"], e["name"], e["symbol"])
                if known is not None and known[0] != desc:
                    raise EventFeedError(
                        f"{where} field 'entities[{i}].entity_id': entity {e['entity_id']!r} is {desc}, but line {known[1]} "
                        f"said {known[0]}"
                    )
                entities.setdefault(e["entity_id"], (desc, n))
    ev_df = pl.DataFrame(events, schema={**RAW_TABLES["events"].columns})
    link_df = pl.DataFrame(
        links,
        schema={
            "event_id": pl.String,
            "entity_id": pl.String,
            "symbol": pl.String,
            "relevance": pl.Float64,
            "ts": TS,
            "available_at": TS,
        },
    )
    ent_df = pl.DataFrame(
        [
            {"entity_id": k, "entity_type": v[0][0], "name": v[0][1], "symbol": v[0][2]}
            for k, v in entities.items()
        ],
        schema={"entity_id": pl.String, "entity_type": pl.String, "name": pl.String, "symbol": pl.String},
    )
    return {"events": ev_df, "event_links": link_df, "entities": ent_df}


def events_tables(path: str, start: dt.date, end: dt.date, until: dt.datetime) -> dict[str, pl.DataFrame]:
    """The three tables for days [start, end), holding only what was visible by `until`.

    An entity is first seen at its first VISIBLE mention, so an entity first named in an event
    published after `until` does not appear early; the catalogue is restated in every month from
    then on (`base.restate_catalogue`).
    """
    full = load_events_jsonl(path)
    visible = (pl.col("ts") < until) & (pl.col("available_at") <= until)
    events = full["events"].filter(visible)
    links = full["event_links"].filter(visible).with_columns(date=pl.col("ts").dt.date())
    first = links.group_by("entity_id").agg(pl.col("date").min().alias("first_seen"))
    entities = restate_catalogue(full["entities"].join(first, on="entity_id", how="inner"), start, end)
    in_window = (pl.col("date") >= start) & (pl.col("date") < end)
    return {
        "events": RAW_TABLES["events"].conform(events.filter(in_window)).sort("event_id"),
        "event_links": RAW_TABLES["event_links"]
        .conform(links.filter(in_window))
        .sort("event_id", "entity_id"),
        "entities": RAW_TABLES["entities"].conform(entities).sort("date", "entity_id"),
    }


# -- one line ----------------------------------------------------------------------------------


def _event(obj: dict, where: str) -> dict:
    ts = _time(obj, "ts", where)
    available_at = _time(obj, "available_at", where)
    if available_at < ts:
        raise EventFeedError(
            f"{where} field 'available_at': {obj['available_at']!r} is before ts {obj['ts']!r}"
        )
    source = _str(obj, "source", where)
    tier = obj.get("source_tier")
    if isinstance(tier, bool) or not isinstance(tier, int) or not 1 <= tier <= 5:
        raise EventFeedError(f"{where} field 'source_tier': {tier!r} is not an integer 1..5")
    etype = obj.get("event_type")
    if etype not in EVENT_TYPES:
        raise EventFeedError(f"{where} field 'event_type': {etype!r} is not one of {list(EVENT_TYPES)}")
    conf = _unit(obj.get("confidence_score"), f"{where} field 'confidence_score'")
    sentiment = obj.get("sentiment_score")
    if sentiment is not None and (
        isinstance(sentiment, bool) or not isinstance(sentiment, int | float) or not -1.0 <= sentiment <= 1.0
    ):
        raise EventFeedError(
            f"{where} field 'sentiment_score': {sentiment!r} is not a number in [-1, 1] or null"
        )
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise EventFeedError(f"{where} field 'payload': expected an object, got {payload!r:.80}")
    unknown = sorted(set(payload) - set(PAYLOAD_FIELDS))
    if unknown:
        raise EventFeedError(
            f"{where} field 'payload': unknown keys {unknown}; allowed {list(PAYLOAD_FIELDS)}"
        )
    text = _str(payload, "text", where, "payload.text")
    engagement = payload.get("engagement")
    if engagement is not None and (
        isinstance(engagement, bool)
        or not isinstance(engagement, int | float)
        or not math.isfinite(engagement)
    ):
        raise EventFeedError(f"{where} field 'payload.engagement': {engagement!r} is not a number")
    for k in ("author", "platform", "url"):
        if payload.get(k) is not None and not isinstance(payload[k], str):
            raise EventFeedError(f"{where} field 'payload.{k}': {payload[k]!r} is not a string")
    event_id = obj.get("event_id")
    if event_id is None:
        digest = hashlib.sha1(f"{ts.isoformat()}|{source}|{text}".encode()).hexdigest()[:16]
        event_id = f"jsonl:{digest}"
    elif not isinstance(event_id, str) or not event_id:
        raise EventFeedError(f"{where} field 'event_id': {event_id!r} is not a non-empty string")
    return {
        "date": ts.date(),
        "event_id": event_id,
        "ts": ts,
        "available_at": available_at,
        "source": source,
        "source_tier": tier,
        "event_type": etype,
        "confidence_score": float(conf),
        "sentiment_score": None if sentiment is None else float(sentiment),
        "payload": {
            "text": text,
            "engagement": None if engagement is None else float(engagement),
            "author": payload.get("author"),
            "platform": payload.get("platform"),
            "url": payload.get("url"),
        },
    }


def _entity(ent: object, where: str, field: str) -> dict:
    if not isinstance(ent, dict):
        raise EventFeedError(f"{where} field '{field}': expected an object, got {ent!r:.80}")
    out: dict = {k: _str(ent, k, where, f"{field}.{k}") for k in ("entity_id", "entity_type", "name")}
    symbol = ent.get("symbol")
    if symbol is not None and (not isinstance(symbol, str) or not symbol):
        raise EventFeedError(f"{where} field '{field}.symbol': {symbol!r} is not a non-empty string or null")
    out["symbol"] = symbol
    out["relevance"] = _unit(ent.get("relevance", 1.0), f"{where} field '{field}.relevance'")
    return out


def _list(obj: dict, key: str, where: str) -> list:
    v = obj.get(key, [])
    if not isinstance(v, list):
        raise EventFeedError(f"{where} field '{key}': expected a list, got {v!r:.80}")
    return v


def _str(obj: dict, key: str, where: str, field: str | None = None) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise EventFeedError(f"{where} field '{field or key}': {v!r:.80} is not a non-empty string")
    return v


def _unit(v: object, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        raise EventFeedError(f"{where}: {v!r} is not a number in [0, 1]")
    return float(v)


def _time(obj: dict, key: str, where: str) -> dt.datetime:
    v = obj.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return dt.datetime.fromtimestamp(v / 1000, dt.UTC)
    if not isinstance(v, str):
        raise EventFeedError(f"{where} field '{key}': {v!r:.80} is not an ISO 8601 time or epoch ms")
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise EventFeedError(f"{where} field '{key}': {v!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise EventFeedError(f"{where} field '{key}': {v!r} has no UTC offset (write ...Z or +00:00)")
    return t.astimezone(dt.UTC)
