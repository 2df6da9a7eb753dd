"""A user's JSON-lines news feed -> events, event_links, entities; errors name file, line and field."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from quant_assets.schemas import RAW_TABLES
from quant_assets.sources.binance import BinanceSource
from quant_assets.sources.events_jsonl import EventFeedError, events_tables, load_events_jsonl

UTC = dt.UTC
BTC = {"entity_id": "coin:BTC", "entity_type": "coin", "name": "Bitcoin", "symbol": "BTCUSDT"}
SEC = {"entity_id": "reg:SEC", "entity_type": "regulator", "name": "US SEC", "symbol": None, "relevance": 0.5}


def item(**over) -> dict:
    base = {
        "ts": "2024-03-01T12:00:00Z",
        "available_at": "2024-03-01T12:03:10Z",
        "source": "coindesk",
        "source_tier": 1,
        "event_type": "regulatory",
        "confidence_score": 0.8,
        "entities": [BTC, SEC],
        "payload": {
            "text": "SEC approves spot ETF options",
            "engagement": 120,
            "author": "a",
            "platform": "web",
            "url": "https://example.org/x",
        },
    }
    return {**base, **over}


def write_feed(path, items, blank_line_at: int | None = None) -> str:
    lines = [json.dumps(i) for i in items]
    if blank_line_at is not None:
        lines.insert(blank_line_at, "")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_feed_loads_into_the_three_event_tables(tmp_path):
    feed = write_feed(
        tmp_path / "feed.jsonl",
        [
            item(),
            item(
                event_id="x-2",
                ts=1709380800000,
                available_at="2024-03-02T13:00:00+01:00",
                event_type="social_post",
                source_tier=4,
                entities=[BTC],
                payload={"text": "BTC to the moon"},
            ),
        ],
        blank_line_at=1,
    )
    out = events_tables(feed, dt.date(2024, 3, 1), dt.date(2024, 4, 1), dt.datetime(2024, 4, 1, tzinfo=UTC))
    for t, df in out.items():
        assert RAW_TABLES[t].conform(df).equals(df), t
    ev, links, ents = out["events"], out["event_links"], out["entities"]
    assert ev.height == 2 and links.height == 3 and ents.height == 2
    auto = ev.filter(ev["event_id"] != "x-2").row(0, named=True)
    assert auto["event_id"].startswith("jsonl:") and len(auto["event_id"]) == 6 + 16
    assert auto["available_at"] == dt.datetime(2024, 3, 1, 12, 3, 10, tzinfo=UTC)
    assert auto["payload"]["engagement"] == 120.0 and auto["source_tier"] == 1
    second = ev.filter(ev["event_id"] == "x-2").row(0, named=True)
    assert second["ts"] == dt.datetime(2024, 3, 2, 12, tzinfo=UTC)  # epoch ms
    assert second["available_at"] == dt.datetime(2024, 3, 2, 12, tzinfo=UTC)  # +01:00 converted to UTC
    assert second["payload"]["author"] is None
    sec = links.filter(links["entity_id"] == "reg:SEC").row(0, named=True)
    assert sec["relevance"] == 0.5 and sec["symbol"] is None and sec["date"] == dt.date(2024, 3, 1)
    assert ents.filter(ents["entity_id"] == "coin:BTC")["date"].item() == dt.date(2024, 3, 1)  # first mention
    # the same feed loaded twice gives the same ids: no randomness in the default event_id
    assert load_events_jsonl(feed)["events"]["event_id"].sort().equals(ev["event_id"].sort())


def test_only_events_published_by_until_appear_and_entities_date_from_their_first_visible_mention(tmp_path):
    feed = write_feed(
        tmp_path / "feed.jsonl",
        [
            item(ts="2024-03-05T00:00:00Z", available_at="2024-03-05T06:00:00Z", entities=[SEC]),
            item(
                ts="2024-03-06T00:00:00Z",
                available_at="2024-03-06T00:01:00Z",
                entities=[BTC, SEC],
                payload={"text": "second"},
            ),
        ],
    )
    until = dt.datetime(2024, 3, 5, 5, tzinfo=UTC)  # the first item happened but was not yet published
    out = events_tables(feed, dt.date(2024, 3, 1), dt.date(2024, 4, 1), until)
    assert all(df.height == 0 for df in out.values())
    later = events_tables(feed, dt.date(2024, 3, 1), dt.date(2024, 4, 1), dt.datetime(2024, 3, 7, tzinfo=UTC))
    assert later["events"].height == 2
    assert dict(zip(later["entities"]["entity_id"], later["entities"]["date"], strict=True)) == {
        "coin:BTC": dt.date(2024, 3, 6),
        "reg:SEC": dt.date(2024, 3, 5),
    }


def test_the_binance_source_serves_events_from_the_configured_feed(tmp_path):
    feed = write_feed(tmp_path / "feed.jsonl", [item()])
    src = BinanceSource(archive_root=str(tmp_path), use_rest=False, events_jsonl=feed, symbols=["BTCUSDT"])
    out = src.fetch(
        ["events", "event_links", "entities"],
        dt.date(2024, 3, 1),
        dt.date(2024, 4, 1),
        dt.datetime(2024, 4, 1, tzinfo=UTC),
    )
    assert (out["events"].height, out["event_links"].height, out["entities"].height) == (1, 2, 2)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"ts": ', r"line 2: not valid JSON"),
        (json.dumps([1, 2]), r"line 2: expected a JSON object, got list"),
        (
            json.dumps(item(ts="2024-03-01 12:00:00")),
            r"line 2 field 'ts': '2024-03-01 12:00:00' has no UTC offset",
        ),
        (json.dumps(item(ts="yesterday")), r"line 2 field 'ts': 'yesterday' is not an ISO 8601 time"),
        (
            json.dumps(item(available_at="2024-03-01T11:00:00Z")),
            r"line 2 field 'available_at': .* is before ts",
        ),
        (json.dumps(item(source_tier=7)), r"line 2 field 'source_tier': 7 is not an integer 1..5"),
        (json.dumps(item(event_type="rumour")), r"line 2 field 'event_type': 'rumour' is not one of"),
        (
            json.dumps(item(confidence_score=1.5)),
            r"line 2 field 'confidence_score': 1.5 is not a number in \[0, 1\]",
        ),
        (
            json.dumps({k: v for k, v in item().items() if k != "source"}),
            r"line 2 field 'source': None is not",
        ),
        (
            json.dumps(item(payload={"engagement": 3})),
            r"line 2 field 'payload.text': None is not a non-empty string",
        ),
        (
            json.dumps(item(payload={"text": "x", "likes": 3})),
            r"line 2 field 'payload': unknown keys \['likes'\]",
        ),
        (
            json.dumps(item(entities=[{"entity_id": "coin:BTC", "name": "Bitcoin"}])),
            r"line 2 field 'entities\[0\].entity_type': None is not a non-empty string",
        ),
        (
            json.dumps(item(entities=[{**BTC, "name": "BTC"}], payload={"text": "other"})),
            r"line 2 field 'entities\[0\].entity_id': entity 'coin:BTC' is .* but line 1 said",
        ),
        (json.dumps(item(event_id="dup")), None),
    ],
)
def test_a_bad_line_names_the_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "feed.jsonl"
    first = item(event_id="dup")
    path.write_text(json.dumps(first) + "\n" + line + "\n")
    if message is None:
        message = r"line 2 field 'event_id': 'dup' already used on line 1"
    with pytest.raises(EventFeedError, match=rf"^{path} {message}"):
        load_events_jsonl(str(path))
