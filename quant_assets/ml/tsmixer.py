"""TSMixer: an all-MLP forecaster that alternates mixing across time and across channels.

After Chen et al. 2023, "TSMixer: An All-MLP Architecture for Time Series Forecasting", in the
TSMixerx form with exogenous inputs: every input variable is a channel. A window holds N series
(coins) of V variables each over L steps: x is [B, L, N, V]. The model
  1. projects time from L steps to P (`mix_len`) with one linear map shared by all channels,
  2. embeds each series' V variables (plus an optional learned coin vector) into d channels; both
     maps are linear with nothing between, so projecting first changes nothing the model can
     represent but does the L-long work on V channels instead of d (most of the cost at L = 96),
  3. runs `n_blocks` mixer blocks on the [P, N * d] grid: a time-mixing MLP (across the P steps, per
     channel) and a feature-mixing MLP (across the N * d channels, per step), each pre-normed and
     residual,
  4. reads each series' [P, d] through a linear head into `n_targets` outputs: [B, N, n_targets].

N = 1 with a coin embedding is one shared model over per-coin windows (the student); N = 10 mixes
the coins of one timestamp like neuralforecast's multivariate TSMixerx (the benchmark's shape: input
96, 10 coins, a target and 4 exogenous columns, 12 outputs -> about 47k parameters at the defaults).
LayerNorm, not BatchNorm: a sample's output must not depend on which other samples share its batch,
or a 2-rank DDP step would differ from the 1-process step on the same global batch.

Layout (speed, not maths): inside, activations are time-major, [P, B, C]. A mixing over time is then
one matrix product of the [P, P] weight with the [P, B * C] activations (no transposed copy of the
batch per block), and a mixing over channels works on the last axis as usual. The time projection
likewise reads x as [L, B * N * V]: `ml.windows.Windows` gathers windows time-major, so that is a
view; any other x is copied once. Weights are the same nn.Linear parameters a batch-major version
would hold (same state_dict), applied as W @ h.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TSMixerConfig:
    n_vars: int  # input variables per series (features; a target's history counts as one)
    input_len: int = 96  # L: steps in a window
    n_series: int = 1  # N: series per window
    n_targets: int = 2  # outputs per series (label_1h, label_4h; or the steps of a horizon)
    n_coins: int = 0  # > 0: learn a coin_dim vector per coin id, appended to every step's variables
    coin_dim: int = 4
    d_series: int = 16  # d: channels per series after the embedding
    mix_len: int = 12  # P: steps after the temporal projection
    ff_dim: int = 64  # hidden width of the feature-mixing MLP
    n_blocks: int = 2
    dropout: float = 0.0


class MixerBlock(nn.Module):
    def __init__(self, steps: int, channels: int, ff_dim: int, dropout: float):
        super().__init__()
        self.time_norm = nn.LayerNorm(channels)
        self.time_mlp = nn.Linear(steps, steps)
        self.feat_norm = nn.LayerNorm(channels)
        self.feat_mlp = nn.Sequential(
            nn.Linear(channels, ff_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, channels),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [P, B, C], time-major
        z = self.time_norm(h)
        # the time-mixing linear for every sample and channel at once: [P, P] @ [P, B * C]
        t = torch.addmm(self.time_mlp.bias[:, None], self.time_mlp.weight, z.reshape(len(z), -1))
        h = h + self.drop(torch.relu(t.view(h.shape)))
        return h + self.drop(self.feat_mlp(self.feat_norm(h)))


class TSMixer(nn.Module):
    def __init__(self, config: TSMixerConfig):
        super().__init__()
        c = config
        self.config = c
        extra = c.coin_dim if c.n_coins > 0 else 0
        self.coin_emb = nn.Embedding(c.n_coins, c.coin_dim) if c.n_coins > 0 else None
        self.embed = nn.Linear(c.n_vars + extra, c.d_series)
        self.time_proj = nn.Linear(c.input_len, c.mix_len)
        channels = c.n_series * c.d_series
        self.blocks = nn.ModuleList(
            MixerBlock(c.mix_len, channels, c.ff_dim, c.dropout) for _ in range(c.n_blocks)
        )
        self.head = nn.Linear(c.mix_len * c.d_series, c.n_targets)

    def forward(self, x: torch.Tensor, coin: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, N, V] (finite: gaps already filled), coin [B, N] int ids -> [B, N, n_targets]."""
        c = self.config
        B, L, N, V = x.shape
        if x.shape[1:] != (c.input_len, c.n_series, c.n_vars):
            raise ValueError(f"TSMixer: input shape {tuple(x.shape)}, config wants [B, {c.input_len}, "
                             f"{c.n_series}, {c.n_vars}]")  # fmt: skip
        P = c.mix_len
        # time projection, L -> P steps, of every series and variable: [P, L] @ [L, B * N * V]
        xt = x.transpose(0, 1).reshape(L, B * N * V)  # a view when x is time-major (ml.windows)
        h = torch.addmm(self.time_proj.bias[:, None], self.time_proj.weight, xt).view(P, B, N, V)
        if self.coin_emb is not None:
            if coin is None:
                raise ValueError("TSMixer: config has a coin embedding, so forward needs coin ids [B, N]")
            e = self.coin_emb(coin)[None].expand(P, B, N, c.coin_dim)
            h = torch.cat([h, e], dim=-1)
        h = self.embed(h).view(P, B, N * c.d_series)  # [P, B, C]
        for block in self.blocks:
            h = block(h)
        h = h.view(P, B, N, c.d_series).permute(1, 2, 0, 3).reshape(B, N, P * c.d_series)  # [B, N, P * d]
        return self.head(h)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
