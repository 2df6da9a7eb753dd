"""News and social events of one day, their entity links, and the entity catalogue.

Events of a day come from one stream keyed by (seed, NEWS, day), so a day's events and
their ids (`sim-YYYY-MM-DD-NNNN`, numbered by time) never depend on the fetched window.
Each event has a latent sentiment (-1, 0, +1) and an intensity; `sentiment_score` publishes
their product (as a news vendor's scored feed would), and its text is drawn from small
templates whose words are in `POSITIVE_WORDS` / `NEGATIVE_WORDS` (neutral texts use
neither), so a lexicon reads the sign back. An event's effect size (`DayEvents.z`, see
`sim_effects`) is computed from the published, rounded columns only. Besides the Poisson arrivals, a
`market` story follows any day whose move exceeded 2.2 daily standard deviations; it
is published the next morning, so it only ever reports the past.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from quant_assets.sources import sim_params as p
from quant_assets.sources.sim_daily import DailyState
from quant_assets.universe import COINS, HISTORY_START

POSITIVE_WORDS = (
    "surges", "surged", "rally", "rallies", "bullish", "gains", "record", "approves", "approval",
    "partnership", "upgrade", "adoption", "breakout", "soars", "strong", "win",
)  # fmt: skip
NEGATIVE_WORDS = (
    "plunges", "plunged", "crash", "bearish", "hack", "lawsuit", "sues", "ban", "outage", "fraud",
    "selloff", "delisting", "dumping", "weak", "collapse", "probe",
)  # fmt: skip

TYPE_RATES = {
    "funding": 0.6, "product": 1.5, "mna": 0.25, "regulatory": 0.8, "market": 2.0,
    "social_post": 36.0, "social_comment": 72.0,
}  # fmt: skip
TYPES = tuple(TYPE_RATES)
SOCIAL = frozenset({"social_post", "social_comment"})
SECONDARY = {"funding": "project", "product": "exchange", "mna": "project", "regulatory": "regulator",
             "market": "exchange"}  # fmt: skip
NEWS_SOURCES = (
    ("reuters", 1, "reuters.com", 0.08), ("bloomberg", 1, "bloomberg.com", 0.07),
    ("coindesk", 2, "coindesk.com", 0.25), ("theblock", 2, "theblock.co", 0.20),
    ("cointelegraph", 3, "cointelegraph.com", 0.20), ("decrypt", 3, "decrypt.co", 0.12),
    ("cryptoslate", 4, "cryptoslate.com", 0.08),
)  # fmt: skip
PLATFORMS = (("x", "x.com", 0.6), ("reddit", "reddit.com", 0.3), ("telegram", "t.me", 0.1))
TIER_WEIGHT = np.array([0.0, 1.0, 0.85, 0.65, 0.45, 0.30])  # by source_tier
TIER_CONFIDENCE = np.array([0.0, 0.90, 0.80, 0.65, 0.50, 0.35])
REPORTERS = ("a.chen", "m.rossi", "j.smith", "k.tanaka", "l.garcia", "s.kumar", "e.mueller", "o.adeyemi")
HANDLES = ("satoshi_fan", "chartwizard", "degen", "whalewatch", "hodler", "altseason", "onchainguy", "macro")
COIN_NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "BNB": "BNB", "XRP": "XRP",
              "ADA": "Cardano", "DOGE": "Dogecoin", "TRX": "TRON", "AVAX": "Avalanche", "LINK": "Chainlink"}  # fmt: skip

T = {  # (type, sentiment) -> templates; {base} {name} {ent} {pct} {amt}
    ("funding", 1): ("{ent} raises ${amt}M to build on {name}, a bullish sign for {base}",
                     "{ent} closes record ${amt}M round; {base} ecosystem gains"),
    ("funding", 0): ("{ent} raises ${amt}M in a round led by existing investors",
                     "{ent} discloses ${amt}M seed round for {name} tooling"),
    ("funding", -1): ("{ent} funding round collapses; investors turn bearish on {base}",
                      "{ent} under fraud probe weeks after ${amt}M raise tied to {name}"),
    ("product", 1): ("{ent} launches {base} staking upgrade as adoption soars",
                     "{ent} and {name} announce partnership; {base} gains"),
    ("product", 0): ("{ent} schedules {base} wallet maintenance for Tuesday",
                     "{ent} updates {base} deposit confirmations"),
    ("product", -1): ("{ent} suspends {base} withdrawals after outage",
                      "{ent} announces {base} delisting from margin pairs"),
    ("mna", 1): ("{ent} to be acquired in deal seen as bullish for {base}",
                 "{ent} acquisition wins approval; {name} community cheers strong exit"),
    ("mna", 0): ("{ent} in talks over possible acquisition, sources say",
                 "{ent} confirms review of strategic options around {name}"),
    ("mna", -1): ("{ent} acquisition collapses amid fraud probe",
                  "{ent} merger blocked; {base} holders bearish"),
    ("regulatory", 1): ("{ent} approves {base} exchange-traded product in landmark win",
                        "{ent} approval clears path for {name} adoption"),
    ("regulatory", 0): ("{ent} opens consultation on {base} custody rules",
                        "{ent} publishes guidance on reporting of {name} holdings"),
    ("regulatory", -1): ("{ent} sues issuer over {base} sales; lawsuit weighs on market",
                         "{ent} floats ban on {name} lending products"),
    ("market", 1): ("{base} rallies {pct}% as buyers return; breakout in sight",
                    "{name} surges {pct}% to lead majors on {ent}"),
    ("market", 0): ("{base} trades flat ahead of macro data",
                    "{name} volumes steady on {ent} as traders wait"),
    ("market", -1): ("{base} plunges {pct}% in sharp selloff",
                     "{name} dumping: {pct}% lower on {ent} as longs unwind"),
    ("social_post", 1): ("Just bought more ${base}, this rally is only starting. Bullish",
                         "${base} breakout confirmed, strong close on the daily"),
    ("social_post", 0): ("Anyone watching ${base} today?", "Thread on ${base} tokenomics, thoughts below"),
    ("social_post", -1): ("${base} is dumping hard, bearish until it reclaims support",
                          "Getting out of ${base}, this looks weak and a crash is coming"),
    ("social_comment", 1): ("Agree, ${base} looks strong here", "Bullish on ${base}, record soon"),
    ("social_comment", 0): ("What's your target for ${base}?", "Source for the ${base} chart?"),
    ("social_comment", -1): ("No way, ${base} is weak, selloff incoming", "${base} bearish, sold my bag"),
}  # fmt: skip
MOVE_TEMPLATE = {1: "{name} ({base}) surged {pct}% on {day}, its biggest gain in weeks",
                 -1: "{name} ({base}) plunged {pct}% on {day} in a broad selloff"}  # fmt: skip


@dataclass(frozen=True)
class Entity:
    entity_id: str
    entity_type: str
    name: str
    symbol: str | None
    first_seen: dt.date


_OTHERS = (
    ("exchange", "binance", "Binance", HISTORY_START), ("exchange", "coinbase", "Coinbase", HISTORY_START),
    ("exchange", "okx", "OKX", HISTORY_START), ("exchange", "kraken", "Kraken", HISTORY_START),
    ("exchange", "bybit", "Bybit", dt.date(2018, 12, 1)),
    ("regulator", "sec", "SEC", HISTORY_START), ("regulator", "cftc", "CFTC", HISTORY_START),
    ("regulator", "esma", "ESMA", HISTORY_START), ("regulator", "mas", "MAS", dt.date(2019, 1, 14)),
    ("project", "opensea", "OpenSea", HISTORY_START), ("project", "uniswap", "Uniswap", dt.date(2018, 11, 2)),
    ("project", "aave", "Aave", dt.date(2020, 10, 2)), ("project", "lido", "Lido", dt.date(2020, 12, 17)),
    ("project", "eigenlayer", "EigenLayer", dt.date(2023, 6, 14)),
    ("project", "ethena", "Ethena", dt.date(2024, 2, 19)),
)  # fmt: skip
ENTITIES: tuple[Entity, ...] = tuple(
    Entity(f"coin:{c.base}", "coin", COIN_NAMES[c.base], c.symbol, c.first_day()) for c in COINS
) + tuple(Entity(f"{t}:{k}", t, name, None, d) for t, k, name, d in _OTHERS)


class _Event(NamedTuple):
    ts: int  # ms after the day's 00:00 UTC
    kind: str
    source: str
    tier: int
    confidence: float
    sentiment_score: float  # latent sentiment (-1, 0, +1) * intensity, as published
    text: str
    engagement: float
    author: str
    platform: str
    domain: str
    delay: int  # ms from ts to available_at
    coin: int
    relevance: float
    entity: Entity | None  # the secondary entity (exchange, project, regulator)
    social: bool
    z: float  # signed size of the event's effect (see sim_effects)


@dataclass
class DayEvents:
    """One day's events (sorted by ts) and links, plus what the drift of each event is."""

    events: dict[str, list]
    links: dict[str, list]
    coin: np.ndarray  # drift records: coin index, availability, effect (0 news / 1 social), signed size
    avail_ms: np.ndarray
    social: np.ndarray
    z: np.ndarray


def _pick(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(weights) / np.sum(weights)
    return np.minimum(np.searchsorted(cum, u, side="right"), len(weights) - 1)


def day_events(seed: int, daily: DailyState, cal_day: int) -> DayEvents:
    day = p.CAL_START + dt.timedelta(days=cal_day)
    day_ms = (day - dt.date(1970, 1, 1)).days * p.DAY_MS
    listed = [i for i, c in enumerate(COINS) if c.spot_listed <= day]
    g = p.day_rng(seed, p.NEWS, day.toordinal(), p.S_EVENTS)
    counts = g.poisson(list(TYPE_RATES.values()))
    n = int(counts.sum())
    kinds = np.repeat(np.arange(len(TYPES)), counts)
    u = g.random((12, n))
    zn = g.standard_normal(n)
    move_u = g.random((3, p.N_COINS))
    if not listed:
        return _assemble(day, day_ms, [])
    social = kinds >= TYPES.index("social_post")
    post = kinds == TYPES.index("social_post")
    coin = np.array(listed)[_pick(u[0], np.array([p.COIN_PARAMS[i].dollar_volume for i in listed]))]
    sentiment = _pick(u[1], np.array([0.35, 0.30, 0.35])) - 1
    intensity = 0.5 + 0.5 * u[2]
    ts = np.floor(u[3] * p.DAY_MS).astype(np.int64)
    plat = _pick(u[4], np.array([w for *_, w in PLATFORMS]))
    src = _pick(u[4], np.array([w for *_, w in NEWS_SOURCES]))
    engagement = np.round(np.exp(np.where(social, np.where(post, 3.0, 1.0) + 1.4 * zn, 5.0 + zn)))
    news_tier = np.array([t for _, t, *_ in NEWS_SOURCES])[src]
    tier = np.where(social, np.where((plat == 0) & (engagement > 500), 4, 5), news_tier)
    confidence = np.round(
        np.where(social, 0.15 + 0.35 * u[6], TIER_CONFIDENCE[tier] + 0.16 * (u[6] - 0.5)), 3
    )
    delay = np.where(social, np.floor(u[7] * 90_000), 30_000 + np.floor(u[7] * 1_170_000)).astype(np.int64)
    # What the tables publish, rounded as stored; the effect is computed from these very numbers so
    # that the published columns carry it exactly (see sim_effects).
    relevance = np.round(0.7 + 0.3 * u[11], 3)
    score = np.round(sentiment * intensity, 3)
    weight = np.where(
        social, np.minimum(np.log1p(engagement) / 5.0, 2.0), confidence * TIER_WEIGHT[tier] * relevance
    )
    z = score * weight
    pct, amt = (3 + 12 * u[11]).round(1).tolist(), (5 + 195 * u[11]).astype(int).tolist()
    cands = {
        t: [e for e in ENTITIES if e.entity_type == t and e.first_seen <= day]
        for t in set(SECONDARY.values())
    }
    rows = []
    for j in range(n):
        kind, c, soc = TYPES[kinds[j]], int(coin[j]), bool(social[j])
        a, b = float(u[8, j]), float(u[9, j])
        ent = None
        if soc:
            source, domain = PLATFORMS[plat[j]][0], PLATFORMS[plat[j]][1]
            platform, author = source, f"@{HANDLES[int(a * len(HANDLES))]}{int(b * 100)}"
        else:
            source, domain = NEWS_SOURCES[src[j]][0], NEWS_SOURCES[src[j]][2]
            platform, author = "web", REPORTERS[int(a * len(REPORTERS))]
            pool = cands[SECONDARY[kind]]
            ent = pool[int(b * len(pool))] if pool else None
        tmpl = T[(kind, int(sentiment[j]))]
        base = COINS[c].base
        text = tmpl[int(u[10, j] * len(tmpl))].format(
            base=base, name=COIN_NAMES[base], ent=ent.name if ent else "Binance", pct=pct[j], amt=amt[j]
        )
        rows.append(
            _Event(int(ts[j]), kind, source, int(tier[j]), float(confidence[j]), float(score[j]), text,
                   float(engagement[j]), author, platform, domain, int(delay[j]), c, float(relevance[j]), ent, soc,
                   float(z[j]))
        )  # fmt: skip
    rows += _move_events(daily, cal_day, day, listed, move_u)
    return _assemble(day, day_ms, rows)


def _move_events(
    daily: DailyState, cal_day: int, day: dt.date, listed: list[int], u: np.ndarray
) -> list[_Event]:
    rows = []
    yday = day - dt.timedelta(days=1)
    for c in listed:
        if COINS[c].spot_listed > yday - dt.timedelta(days=1):
            continue  # yesterday's move needs the close of the day before it
        move = daily.anchor[c, cal_day - 1] - daily.anchor[c, cal_day - 2]
        sd = daily.vol[c, cal_day - 1]
        if abs(move) <= 2.2 * sd:
            continue
        s = 1 if move > 0 else -1
        base = COINS[c].base
        text = MOVE_TEMPLATE[s].format(name=COIN_NAMES[base], base=base, pct=f"{abs(np.expm1(move)) * 100:.1f}",
                                       day=yday.isoformat())  # fmt: skip
        ts = int(300_000 + u[0, c] * 5_100_000)
        score = round(s * min(1.0, abs(move) / (4 * sd)), 3)
        engagement = float(np.round(np.exp(6 + u[2, c])))
        delay = int(30_000 + u[1, c] * 270_000)
        z = score * 0.95 * TIER_WEIGHT[2]
        rows.append(
            _Event(ts, "market", "coindesk", 2, 0.95, score, text, engagement, "markets-bot", "web", "coindesk.com",
                   delay, c, 1.0, None, False, z)
        )  # fmt: skip
    return rows


def _assemble(day: dt.date, day_ms: int, rows: list[_Event]) -> DayEvents:
    rows.sort(key=lambda r: r.ts)  # stable: ties keep their draw order
    ev = {k: [] for k in ("event_id", "ts", "available_at", "source", "source_tier", "event_type",
                          "confidence_score", "sentiment_score", "text", "engagement", "author", "platform",
                          "url")}  # fmt: skip
    links = {k: [] for k in ("event_id", "entity_id", "symbol", "relevance")}
    drift = {k: [] for k in ("coin", "avail", "social", "z")}
    for k, r in enumerate(rows):
        eid = f"sim-{day.isoformat()}-{k:04d}"
        path = f"{r.author.lstrip('@')}/status/{eid}" if r.social else f"markets/{eid}"
        values = (eid, day_ms + r.ts, day_ms + r.ts + r.delay, r.source, r.tier, r.kind, r.confidence,
                  r.sentiment_score, r.text, r.engagement, r.author, r.platform, f"https://{r.domain}/{path}")  # fmt: skip
        for key, val in zip(ev, values, strict=True):
            ev[key].append(val)
        targets = [(f"coin:{COINS[r.coin].base}", COINS[r.coin].symbol, r.relevance)]
        if r.entity is not None:
            targets.append((r.entity.entity_id, None, 0.5))
        for ent_id, sym, relevance in targets:
            links["event_id"].append(eid)
            links["entity_id"].append(ent_id)
            links["symbol"].append(sym)
            links["relevance"].append(round(relevance, 3))
        if r.z != 0.0:
            drift["coin"].append(r.coin)
            drift["avail"].append(day_ms + r.ts + r.delay)
            drift["social"].append(r.social)
            drift["z"].append(r.z)
    return DayEvents(
        ev, links, np.array(drift["coin"], dtype=np.int64), np.array(drift["avail"], dtype=np.int64),
        np.array(drift["social"], dtype=bool), np.array(drift["z"], dtype=float),
    )  # fmt: skip
