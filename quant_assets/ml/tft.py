"""A compact Temporal Fusion Transformer: variable selection, an LSTM encoder and interpretable attention.

After Lim et al. 2021, "Temporal Fusion Transformers for Interpretable Multi-horizon Time Series
Forecasting". A window x is [B, L, V] of past inputs (market and exogenous features alike; the
labels are the horizons' returns, read from the window's last step, so there is no decoder over
known future inputs). The model
  1. static covariate encoders: with `n_coins` > 0 the coin's learned vector goes through four GRNs
     giving the contexts c_s (variable selection), c_e (enrichment), c_h and c_c (the LSTM's initial
     state); without coins there is no static context and the LSTM starts from zeros,
  2. variable selection network (VSN): each variable's value at each step is embedded into d dims
     (its own linear map) and transformed by its own GRN; a GRN over all V embeddings (with c_s)
     gives softmax weights over the V variables; the step's input is the weighted sum,
  3. an LSTM encoder over the L selected inputs, then a gate (GLU), the skip from the VSN output
     and LayerNorm,
  4. static enrichment: a GRN with context c_e at every step,
  5. interpretable multi-head attention: every head has its own queries and keys, all share one
     value projection, and the heads' outputs are averaged, so the averaged attention weights say
     which past steps the forecast used. Only the last step is a query (the forecast is made there;
     every key is at or before it, so the causal mask is implicit), then gate, add and norm,
  6. a position-wise GRN, a gate with the skip from the LSTM block, and a linear head on the last
     step: [B, n_targets].

`forward(..., return_weights=True)` also returns the VSN weights averaged over the window [B, V]
and the head-averaged attention over the L steps [B, L]. LayerNorm only: a sample's output never
depends on its batch (DDP equals one process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TFTConfig:
    n_vars: int  # V: time-varying past inputs
    input_len: int = 96  # L
    n_targets: int = 2
    n_coins: int = 0  # > 0: the coin is the static covariate
    d_model: int = 16
    n_heads: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"TFT: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


class GRN(nn.Module):
    """Gated residual network: LayerNorm(skip(a) + GLU(W1 ELU(W2 a + W3 c)))."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, d_context: int = 0, dropout: float = 0.0):
        super().__init__()
        self.fc2 = nn.Linear(d_in, d_hidden)
        self.ctx = nn.Linear(d_context, d_hidden, bias=False) if d_context else None
        self.fc1 = nn.Linear(d_hidden, d_hidden)
        self.glu = nn.Linear(d_hidden, 2 * d_out)
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else None
        self.norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, a: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        eta = self.fc2(a)
        if self.ctx is not None and c is not None:
            eta = eta + self.ctx(c)
        eta = self.drop(self.fc1(F.elu(eta)))
        skip = a if self.skip is None else self.skip(a)
        return self.norm(skip + F.glu(self.glu(eta), dim=-1))


class VariableGRNs(nn.Module):
    """V GRNs (d -> d), one per variable, applied in one batched einsum to [..., V, d]."""

    def __init__(self, n_vars: int, d: int, dropout: float):
        super().__init__()
        s = 1 / math.sqrt(d)
        self.w2 = nn.Parameter(torch.empty(n_vars, d, d).uniform_(-s, s))
        self.b2 = nn.Parameter(torch.zeros(n_vars, d))
        self.w1 = nn.Parameter(torch.empty(n_vars, d, d).uniform_(-s, s))
        self.b1 = nn.Parameter(torch.zeros(n_vars, d))
        self.wg = nn.Parameter(torch.empty(n_vars, d, 2 * d).uniform_(-s, s))
        self.bg = nn.Parameter(torch.zeros(n_vars, 2 * d))
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, a: torch.Tensor) -> torch.Tensor:  # [..., V, d]
        eta = F.elu(torch.einsum("...vi,vio->...vo", a, self.w2) + self.b2)
        eta = self.drop(torch.einsum("...vi,vio->...vo", eta, self.w1) + self.b1)
        return self.norm(a + F.glu(torch.einsum("...vi,vio->...vo", eta, self.wg) + self.bg, dim=-1))


class GateAddNorm(nn.Module):
    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.glu = nn.Linear(d, 2 * d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.norm(skip + F.glu(self.glu(self.drop(h)), dim=-1))


class InterpretableAttention(nn.Module):
    """Per-head queries and keys, one shared value projection, heads averaged (TFT eq. 14-16)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, self.dh)  # shared by every head
        self.out = nn.Linear(self.dh, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query [B, 1, d], keys [B, L, d] -> output [B, 1, d], head-averaged weights [B, L]."""
        B, L, _ = keys.shape
        q = self.q(query).view(B, 1, self.heads, self.dh).transpose(1, 2)  # [B, h, 1, dh]
        k = self.k(keys).view(B, L, self.heads, self.dh).transpose(1, 2)  # [B, h, L, dh]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh), dim=-1).mean(dim=1)  # [B, 1, L]
        return self.out(self.drop(att) @ self.v(keys)), att[:, 0]


class TFT(nn.Module):
    def __init__(self, config: TFTConfig):
        super().__init__()
        c = self.config = config
        d = c.d_model
        self.coin_emb = nn.Embedding(c.n_coins, d) if c.n_coins > 0 else None
        if self.coin_emb is not None:
            self.static = nn.ModuleList(
                GRN(d, d, d, dropout=c.dropout) for _ in range(4)
            )  # c_s, c_e, c_h, c_c
        ctx = d if c.n_coins > 0 else 0
        # variable selection: a per-variable embedding of each scalar input, its GRN, and the weights
        self.var_w = nn.Parameter(torch.randn(c.n_vars, d) * 0.1)
        self.var_b = nn.Parameter(torch.zeros(c.n_vars, d))
        self.var_grns = VariableGRNs(c.n_vars, d, c.dropout)
        self.select = GRN(c.n_vars * d, d, c.n_vars, d_context=ctx, dropout=c.dropout)
        self.lstm = nn.LSTM(d, d, batch_first=True)
        self.lstm_gate = GateAddNorm(d, c.dropout)
        self.enrich = GRN(d, d, d, d_context=ctx, dropout=c.dropout)
        self.attn = InterpretableAttention(d, c.n_heads, c.dropout)
        self.attn_gate = GateAddNorm(d, c.dropout)
        self.ff = GRN(d, d, d, dropout=c.dropout)
        self.out_gate = GateAddNorm(d, c.dropout)
        self.head = nn.Linear(d, c.n_targets)

    def forward(self, x: torch.Tensor, coin: torch.Tensor | None = None, return_weights: bool = False):
        """x [B, L, V] (standardised, gaps filled), coin [B] ids -> [B, n_targets] (and the weights)."""
        c = self.config
        B, L, V = x.shape
        if (c.input_len, c.n_vars) != (L, V):
            raise ValueError(
                f"TFT: input shape {tuple(x.shape)}, config wants [B, {c.input_len}, {c.n_vars}]"
            )
        c_s = c_e = state = None
        if self.coin_emb is not None:
            if coin is None:
                raise ValueError("TFT: config has a coin embedding, so forward needs coin ids [B]")
            s = self.coin_emb(coin)
            c_s, c_e, c_h, c_c = (grn(s) for grn in self.static)
            state = (c_h[None].contiguous(), c_c[None].contiguous())
        # --- variable selection at every step
        emb = x[..., None] * self.var_w + self.var_b  # [B, L, V, d]
        weights = torch.softmax(self.select(emb.flatten(2), None if c_s is None else c_s[:, None]), dim=-1)
        selected = (weights[..., None] * self.var_grns(emb)).sum(dim=2)  # [B, L, d]
        # --- local processing: LSTM encoder, gated skip
        enc, _ = self.lstm(selected, state)
        phi = self.lstm_gate(enc, selected)
        # --- static enrichment, then attention from the last step over the window
        theta = self.enrich(phi, None if c_e is None else c_e[:, None])
        att_out, att = self.attn(theta[:, -1:], theta)
        delta = self.attn_gate(att_out[:, 0], theta[:, -1])
        out = self.out_gate(self.ff(delta), phi[:, -1])
        pred = self.head(out)
        if return_weights:
            return pred, {"variables": weights.mean(dim=1), "attention": att}
        return pred

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
