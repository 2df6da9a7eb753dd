"""Exogenous per coin-day signals: book imbalance, funding, on-chain flows, outages.

Each is drawn from its own rows of the coin-day random block, independent of every
price shock, so at signal_strength = 0 none of them says anything about future returns.
Funding also leans on the basis and on yesterday's move (both already public at the
funding time), as real funding does; that is information about the past only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant_assets.sources import sim_params as p
from quant_assets.sources.sim_daily import DailyState, ar1
from quant_assets.sources.sim_paths import Draws

FUNDING_POINTS = np.array(p.FUNDING_HOURS) * p.BARS_PER_HOUR
OB_PHI = 0.5  # book imbalance is short-lived: half its persistence is gone after one 5m bar
NETFLOW_PHI = 0.6


@dataclass(frozen=True)
class Signals:
    book_z: np.ndarray  # (C, nD, 288) standardised book imbalance at each 5m snapshot
    funding: np.ndarray  # (C, nD, 3) funding rate at 00, 08, 16 UTC
    funding_z: np.ndarray  # (C, nD, 3) (funding - mean) / sd
    netflow_z: np.ndarray  # (C, nD, 24) standardised exchange netflow of each hour
    onchain_delay_ms: np.ndarray  # (C, nD, 24) publication delay of each hourly on-chain row
    outage: np.ndarray  # (C, nD, 24) True where the hour's bars are missing


def signals(daily: DailyState, cal_days: np.ndarray, dr: Draws, basis: np.ndarray) -> Signals:
    n = dr.normals
    book_z = ar1(n[:, :, p.N_OB_IMB], OB_PHI)
    yesterday = np.clip(daily.anchor[:, cal_days - 1] - daily.anchor[:, cal_days - 2], -0.25, 0.25)
    funding = (
        p.FUNDING_MEAN
        + 0.5 * (basis[:, :, FUNDING_POINTS] - p.BASIS_MEAN)
        + 0.004 * yesterday[:, :, None]
        + 0.8 * p.FUNDING_SD * n[:, :, p.N_FUNDING, : len(FUNDING_POINTS)]
    )
    funding = np.round(np.clip(funding, -p.FUNDING_CAP, p.FUNDING_CAP), 8)
    netflow_z = ar1(n[:, :, p.N_ONCHAIN, : p.HOURS], NETFLOW_PHI)
    lo, hi = p.ONCHAIN_DELAY_MIN
    delay_min = lo + np.floor(dr.uniforms[:, :, p.HOURS :] * (hi - lo + 1))
    return Signals(
        book_z=book_z,
        funding=funding,
        funding_z=(funding - p.FUNDING_MEAN) / p.FUNDING_SD,
        netflow_z=netflow_z,
        onchain_delay_ms=(delay_min * 60_000).astype(np.int64),
        outage=dr.uniforms[:, :, : p.HOURS] < p.OUTAGE_P,
    )
