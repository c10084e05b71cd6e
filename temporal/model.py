"""STAN: a spatial and a temporal transformer stream over cached frame embeddings, an event
summary beside them, fused; each of the three branches also has a head of its own, and the
output that predicts (the fused head or one branch's) is chosen on val. That is the default
(`streams: both`, `events: 24`, `stream_input: mixed`, `recurrence: true`, `aux_loss: 1`,
`branch_drop: 0.5`; docs/ablations.md).

    x [B,T,D], t [B,T], mask [B,T]       (x → its pca_dims whitened principal components, if set)
      ├─ spatial : Linear(D→d)+LN per frame, +time(t), [CLS], L_s blocks          → S [B,1+T,d]
      ├─ temporal: [a_i, a_i−a_{i−1}, rec_i] → Conv1d(→d, k, stride k)+LN,
      │            +time(clip t), [CLS], L_t blocks                                → U [B,1+T/k,d]
      └─ events  : soft assignments a of frames to K prototypes → shares, positions,
                   onsets, pair order and gaps, highest and mean comeback,
                   less their means → Linear                                       → E [B,d]
    a    : the frames' K prototype assignments (stream_input mixed; features: x itself,
           events: the spatial stream reads a too)
    rec  : recurrence, each frame's self-similarity to frames near and far and how strongly it
           comes back after a break (RepNet's temporal self-similarity, content-agnostic)
    fusion cross : L_f blocks, S attends to U and U attends to S; head([R(S), R(U), E])
           concat: head([R(S), R(U), E])      sum: head(R(S) + R(U), E)
           late  : (head_S([R(S), E]) + head_U([R(U), E])) / 2
    aux_loss     : every branch R(S), R(U), E also has a head of its own, trained on the task alone
    branch_drop  : training zeroes each branch before the fused head with this probability

Padding is masked everywhere it could leak in (attention keys, frame differences, clip
times), so a padded video gives the same output as the same video alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from temporal.config import Config, MeanPoolConfig, StanConfig


class Attention(nn.Module):
    """Multi-head attention of `x` over `ctx` (itself for self-attention), keys masked by `ctx_mask`.

    No dropout on the attention weights: with it, scaled_dot_product_attention falls back from the
    flash/memory-efficient kernels to the math one, whose memory is quadratic in the length.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, d = x.shape
        M, h = ctx.shape[1], self.heads
        q = self.q(x).view(B, N, h, d // h).transpose(1, 2)  # [B, h, N, d/h]
        k, v = self.kv(ctx).view(B, M, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x [B, h, M, d/h]
        keys = ctx_mask[:, None, None, :]
        mask = keys if bias is None else bias.to(q.dtype).masked_fill(~keys, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, N, d)))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, or cross-attention when given a context."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, cross: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln_ctx = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor | None = None,
                ctx_mask: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(x)
        kv, kv_mask = (h, mask) if self.ln_ctx is None else (self.ln_ctx(ctx), ctx_mask)
        x = x + self.attn(h, kv, kv_mask, bias)
        return x + self.mlp(self.ln2(x))


def sinusoid(pos: torch.Tensor, dim: int, min_period: float, max_period: float = 1e4) -> torch.Tensor:
    """[..., dim] sin/cos features of positions `pos` (any real unit), periods geometric in range."""
    half = dim // 2
    frac = torch.arange(half, device=pos.device) / max(half - 1, 1)
    periods = min_period * (max_period / min_period) ** frac
    ang = pos.float()[..., None] * (2 * math.pi / periods)
    enc = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return F.pad(enc, (0, dim - 2 * half))


class TimeEncoding(nn.Module):
    """Where each token is in the video: from timestamps in seconds (robust to any sampling or
    frame rate), from the token's position, or nothing. A linear map lets the model pick scales."""

    def __init__(self, dim: int, kind: str):
        super().__init__()
        self.kind = kind
        self.proj = nn.Linear(dim, dim) if kind != "none" else None

    def forward(self, t: torch.Tensor) -> torch.Tensor | float:
        if self.proj is None:
            return 0.0
        if self.kind == "index":
            pos = torch.arange(t.shape[1], device=t.device).expand_as(t)
            return self.proj(sinusoid(pos, self.proj.in_features, min_period=3.0))
        return self.proj(sinusoid(t, self.proj.in_features, min_period=0.3))


def time_bias(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, heads, 1+T, 1+T] attention-logit biases: -slope_h x |t_i - t_j| (seconds) between frame
    tokens, 0 to and from the CLS token in front. Slopes 2, 1/2, 1/8 ... per second, and 0 for the
    last head, so heads see from about a second around a frame to the whole video (ALiBi, with
    time in seconds instead of token positions: the same at any sampling rate)."""
    slopes = torch.tensor([2.0 ** (1 - 2 * k) for k in range(heads - 1)] + [0.0], device=t.device)
    dist = (t[:, :, None] - t[:, None, :]).abs().float()  # [B, T, T]
    return F.pad(-slopes[None, :, None, None] * dist[:, None], (1, 0, 1, 0))


class Encoder(nn.Module):
    """Tokens + time encoding, a CLS token in front, L blocks (`time_bias`: with ALiBi-style
    biases in seconds), final LayerNorm."""

    def __init__(self, cfg: StanConfig, depth: int):
        super().__init__()
        self.heads = cfg.attention_heads if cfg.time_bias else 0
        self.time = TimeEncoding(cfg.width, cfg.time_encoding)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.attention_heads, cfg.mlp_ratio, cfg.dropout)
                                    for _ in range(depth))
        self.ln = nn.LayerNorm(cfg.width)

    def forward(self, tokens: torch.Tensor, t: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = tokens + self.time(t)
        x = self.drop(torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1))
        mask = torch.cat([mask.new_ones(len(x), 1), mask], dim=1)  # CLS is always a valid key
        bias = time_bias(t, self.heads) if self.heads else None
        for block in self.blocks:
            x = block(x, mask, bias=bias)
        return self.ln(x), mask


class SpatialStream(nn.Module):
    """Each frame's static content: one token per frame."""

    def __init__(self, cfg: StanConfig, in_dim: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, cfg.width), nn.LayerNorm(cfg.width))
        self.encoder = Encoder(cfg, cfg.depth_spatial)

    def forward(self, x, t, mask):
        x, t = _zero_padding(x, t, mask)
        return self.encoder(self.embed(x), t, mask)


RECURRENCE_EDGES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, float("inf"))  # seconds, |t_j - t_i|


def recurrence(x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """[B, T, 4 x 7 + 2]: for each frame i and each bin of time offsets t_j - t_i (before and after,
    |offset| in (0,1], (1,2], ... (32, inf) seconds), the highest and the mean cosine similarity
    of frame i to the frames j there (0 where the bin is empty); then how strongly frame i comes
    back after a break, later and earlier (`comeback`). Content-agnostic, like the temporal
    self-similarity matrix of RepNet: a shot that returns shows whatever the shot is.

    Computed `rows` frames i at a time (default: ~4M similarities per step), so a full-length
    video of thousands of frames never holds its T x T similarity matrix at once."""
    B, T = mask.shape
    xn = F.normalize(x.float(), dim=-1)
    rows = rows or max(1, (1 << 22) // max(1, B * T))
    j = torch.arange(T, device=x.device)
    nb = len(RECURRENCE_EDGES) - 1
    edges = torch.tensor(RECURRENCE_EDGES[1:-1], device=x.device, dtype=t.dtype)
    parts = []
    for i0 in range(0, T, rows):
        i = j[i0:i0 + rows]
        sim = xn[:, i] @ xn.transpose(1, 2)  # [B, rows, T]
        dt = t[:, None, :] - t[:, i, None]  # t_j - t_i
        valid = mask[:, i, None] & mask[:, None, :]
        # each pair's bin: |offset| bin b before frame i is b, after it nb + b; the rest (i itself,
        # the same timestamp, padding) falls in a bin of its own that is dropped
        b = torch.bucketize(dt.abs(), edges) + nb * (dt > 0)
        b = b.masked_fill(~valid | (dt == 0), 2 * nb)
        top = sim.new_full((*b.shape[:2], 2 * nb + 1), -2.0).scatter_reduce(-1, b, sim, "amax")
        n = sim.new_zeros(top.shape).scatter_add(-1, b, torch.ones_like(sim))
        mean = sim.new_zeros(top.shape).scatter_add(-1, b, sim) / n.clamp(min=1)
        binned = torch.stack([torch.where(n > 0, top, 0.0), mean], dim=-1)[..., :-1, :].flatten(-2)
        later, earlier = valid & (j > i[:, None]), valid & (j < i[:, None])
        back = [comeback(sim, later), comeback(sim.flip(-1), earlier.flip(-1))]  # earlier: j runs back
        parts.append(torch.cat([binned, torch.stack(back, dim=-1)], dim=-1))
    return torch.cat(parts, dim=1).to(x.dtype) * mask[..., None].to(x.dtype)


def comeback(sim: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """[B, N]: for each row i of sim [B, N, T], the max over frames j after i (in `after`, in the
    order of the last axis) of sim(i, j) − min over k from i's next frame to j of sim(i, k).

    A frame like i after frames unlike it: near 0 inside one shot however long (its similarity
    only falls), close to the full drop when the shot comes back after others. The similarity
    at a lag cannot tell these apart (a 10-s shot is alike to itself 8 s on); this can, and on the
    time benchmark's repetition task it alone separates once from twice (AUC 0.998)."""
    lowest = torch.cummin(sim.masked_fill(~after, 2.0), dim=-1).values
    return (sim - lowest).masked_fill(~after, 0.0).amax(-1)


RECURRENCE_DIM = 4 * (len(RECURRENCE_EDGES) - 1) + 2


class TemporalStream(nn.Module):
    """Change over time: [x_i, x_i − x_{i−1}] (with `recurrence`, also frame i's similarity to
    the frames before and after it) grouped into clips of k frames, one token per clip, so a
    T-frame video costs T/k tokens."""

    def __init__(self, cfg: StanConfig, in_dim: int):
        super().__init__()
        self.k = cfg.clip_len
        self.recurrence = cfg.recurrence
        extra = RECURRENCE_DIM if cfg.recurrence else 0
        self.conv = nn.Conv1d(2 * in_dim + extra, cfg.width, kernel_size=self.k, stride=self.k)
        self.ln = nn.LayerNorm(cfg.width)
        self.encoder = Encoder(cfg, cfg.depth_temporal)

    def forward(self, x, t, mask, rec: torch.Tensor | None = None):
        """`rec`: the frames' `recurrence` [B, T, RECURRENCE_DIM], read beside x (with `recurrence`)."""
        x, t = _zero_padding(x, t, mask)
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        diff = diff * mask[..., None].to(x.dtype)  # no step from the last real frame into padding
        parts = [x, diff]
        if self.recurrence:
            parts.append(rec)
        z = torch.cat(parts, dim=-1)
        pad = (-z.shape[1]) % self.k  # zero-pad to whole clips, as a padded batch would be
        z = F.pad(z, (0, 0, 0, pad))
        tokens = self.ln(self.conv(z.transpose(1, 2)).transpose(1, 2))  # [B, T/k, d]
        B, n = tokens.shape[:2]
        mf = F.pad(mask, (0, pad)).view(B, n, self.k).float()
        tf = F.pad(t, (0, pad)).view(B, n, self.k)
        clip_mask = mf.sum(-1) > 0
        clip_t = (tf * mf).sum(-1) / mf.sum(-1).clamp(min=1)  # mean time of the clip's real frames
        return self.encoder(tokens, clip_t, clip_mask)


def _zero_padding(x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # padded frames become exact zeros whatever the caller put there (even NaN): they are masked
    # out of attention, but the temporal stream's differences and clips would otherwise see them
    return torch.where(mask[..., None], x, 0.0), torch.where(mask, t, 0.0)


def head(in_dim: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out))


class InputProjection(nn.Module):
    """Frame features -> their leading principal components, whitened: a fixed map fitted on the
    training frames (`fit`), stored with the weights. With little labelled data the streams then
    learn from `pca_dims` inputs instead of a backbone's 768-1280, and their first layers cost
    that much less."""

    def __init__(self, in_dim: int, dims: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("proj", torch.zeros(in_dim, dims))

    def fit(self, mean: torch.Tensor, proj: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.proj.copy_(proj[:, : self.proj.shape[1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.proj


class Centre(nn.Module):
    """Each of n numbers minus its mean over unlabelled videos (`fit`), stored with the weights."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))

    def fit(self, values: torch.Tensor) -> None:
        self.mean.copy_(values.mean(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


class EventSummary(nn.Module):
    """What kinds of shot occur, when and how often. Each frame is softly assigned to K
    prototypes (cosine similarity, a learned temperature); per prototype: its share of the frames,
    its mean position (a fraction of the video) and its number of onsets (entries into it); with
    `pairs`, also per pair of prototypes (j, k) how likely a frame of j comes before a frame of k,
    and with `gaps` how far apart they are (k's mean position minus j's).
    A linear layer maps these numbers to one [B, dim] vector. Order, position and repetition of
    short events are then a few numbers apart, where a transformer must find them among a hundred
    frame tokens. The prototypes are k-means centres of unlabelled frames (`fit`), kept as they
    are or fine-tuned (`prototypes`); the group lasso (`penalty`, `shrink`) lets training keep only
    the few numbers a label depends on."""

    def __init__(self, in_dim: int, k: int, dim: int, pairs: bool = False, comeback: bool = False,
                 gaps: bool = False, norm: str = "centre"):
        super().__init__()
        self.protos = nn.Parameter(F.normalize(torch.randn(k, in_dim), dim=-1))
        self.log_scale = nn.Parameter(torch.tensor(math.log(20.0)))  # 1 / temperature
        n = 3 * k + (pairs + gaps) * (k * (k - 1) // 2) + (4 if comeback else 0)
        self.comeback = comeback
        # centre: each number in its own unit (a share, a position, a count, a chance), less its mean
        # over the fit videos; layer: a LayerNorm across the numbers, which divides every one by a
        # spread that the largest (the onset counts) set, so the comeback numbers and the gaps,
        # small beside them, drown (docs/ablations.md)
        self.proj = nn.Sequential(Centre(n) if norm == "centre" else nn.LayerNorm(n), nn.Linear(n, dim))
        self.pairs, self.gaps = pairs, gaps
        if pairs or gaps:
            self.register_buffer("upper", torch.triu_indices(k, k, offset=1), persistent=False)

    def fit(self, centres: torch.Tensor) -> None:
        with torch.no_grad():
            self.protos[: len(centres)] = centres

    def assign(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, K]: each frame's soft assignment to the prototypes (rows sum to 1; padding 0)."""
        sim = F.normalize(x, dim=-1) @ F.normalize(self.protos, dim=-1).T
        return torch.softmax(sim * self.log_scale.exp(), dim=-1) * mask[..., None].to(x.dtype)

    def stats(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, rec: torch.Tensor | None = None
              ) -> torch.Tensor:
        """[B, 3K (+ K(K-1)/2) (+ K(K-1)/2) (+ 4)]: each prototype's share of the frames, mean
        position in [0, 1] and number of onsets; with pairs, for each j < k the chance that a frame
        of j precedes one of k; with gaps, k's mean position minus j's: how far apart two shots are,
        which the chance of preceding (1 whether they touch or not) cannot say; with comeback, the
        highest and the mean `comeback` of the frames (later, earlier), from `rec` (their
        `recurrence`, computed here if not given): whether any shot returns, whichever it is,
        which prototypes cannot say."""
        m = mask[..., None].to(x.dtype)
        a = self.assign(x, mask)  # [B, T, K], padding 0
        t = torch.where(mask, t, t[:, :1])
        first, last = t[:, :1], t.amax(1, keepdim=True)
        r = ((t - first) / (last - first).clamp(min=1e-6))[..., None]  # 0 at the first frame, 1 at the last
        n = a.sum(1)
        eps = 0.1  # a prototype absent from the video sits in its middle (and precedes with chance 1/2)
        where = ((a * r).sum(1) + 0.5 * eps) / (n + eps)
        onsets = F.relu(a - F.pad(a, (0, 0, 1, 0))[:, :-1]).sum(1)
        out = [n / m.sum(1).clamp(min=1), where, onsets]
        if self.pairs:
            later = n[:, None] - a.cumsum(1)  # [B, T, K]: assignment mass strictly after frame i
            before = torch.einsum("btj,btk->bjk", a, later)  # frames are in time order
            j, k = self.upper
            out.append((before[:, j, k] + 0.5 * eps) / (n[:, j] * n[:, k] + eps))
        if self.gaps:
            j, k = self.upper
            out.append(where[:, k] - where[:, j])
        if self.comeback:
            rec = recurrence(x, t, mask) if rec is None else rec
            back = rec[..., -2:]  # 0 on padding
            out += [back.amax(1), back.sum(1) / m.sum(1).clamp(min=1)]
        return torch.cat(out, dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, rec: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self.proj(self.stats(x, t, mask, rec))

    def penalty(self) -> torch.Tensor:
        """Group lasso: the summed L2 norms of each input number's weights (with `norm: layer` its
        LayerNorm gain included, which could otherwise grow as they shrink). Most of the numbers
        describe shots in random order; from a hundred videos a head reading them all memorises
        the videos (the K(K-1)/2 pairs and gaps alone are hundreds), one made to pick a few finds
        the events."""
        return self.column_norms().sum()

    def column_norms(self) -> torch.Tensor:
        """[n]: the length of each input number's column of weights, a LayerNorm's gain included."""
        norm, linear = self.proj
        gain = norm.weight if isinstance(norm, nn.LayerNorm) else 1.0
        return (linear.weight * gain).norm(dim=0)

    @torch.no_grad()
    def shrink(self, amount: float) -> None:
        """The group lasso's proximal step: each number's column of weights (gain included) moves
        `amount` towards 0 in norm, and is 0 once shorter. As a loss term its gradient goes through
        AdamW, which rescales it to a step of about lr per weight whatever its size: every column
        shrinks at the same pace from the first step, before any task gradient can pick one, and a
        seed's summary could die in its first epochs (docs/ablations.md)."""
        col = self.column_norms()
        self.proj[1].weight.mul_((1 - amount / col.clamp(min=1e-12)).clamp(min=0))


class STAN(nn.Module):
    def __init__(self, cfg: StanConfig, in_dim: int, out_dim: int, branch_heads: bool = False,
                 branch_drop: float = 0.0):
        super().__init__()
        self.cfg, self.branch_drop = cfg, branch_drop
        use_s, use_t = cfg.streams in ("both", "spatial"), cfg.streams in ("both", "temporal")
        self.project = InputProjection(in_dim, cfg.pca_dims) if cfg.pca_dims else None
        in_dim = cfg.pca_dims or in_dim
        self.events = EventSummary(in_dim, cfg.events, cfg.width, cfg.event_pairs, cfg.recurrence,
                                   cfg.event_gaps, cfg.event_norm) if cfg.events else None
        # the streams read the frames, or each frame's assignment to the summary's prototypes (K
        # numbers instead of D: what a hundred videos can teach a transformer without memorising)
        # (mixed: the spatial stream the frames, for what is shown; the temporal stream the
        # assignments, for what happens when: the many-class content and repetition tasks each need one)
        self.assigned = {"spatial": cfg.stream_input == "events",
                         "temporal": cfg.stream_input != "features" and cfg.events > 0}
        width = {s: cfg.events if a else in_dim for s, a in self.assigned.items()}
        self.spatial = SpatialStream(cfg, width["spatial"]) if use_s else None
        self.temporal = TemporalStream(cfg, width["temporal"]) if use_t else None
        # O(T^2) in time: only when the temporal stream or the summary reads it
        self.recurrence = cfg.recurrence and (use_t or self.events is not None)
        both = use_s and use_t
        self.fusion = cfg.fusion if both else "single" if use_s or use_t else "none"
        d = cfg.width
        self.cross = nn.ModuleList()
        if self.fusion == "cross":
            self.cross = nn.ModuleList(
                nn.ModuleList([Block(d, cfg.attention_heads, cfg.mlp_ratio, cfg.dropout, cross=True),
                               Block(d, cfg.attention_heads, cfg.mlp_ratio, cfg.dropout, cross=True)])
                for _ in range(cfg.depth_fusion)
            )
        if self.fusion == "late":  # one head per stream, each also reading the event summary
            ev = d if self.events is not None else 0
            one = (self.embed_dim - ev) // 2 + ev
            self.heads = nn.ModuleList(head(one, d, out_dim, cfg.dropout) for _ in range(2))
        else:
            self.heads = nn.ModuleList([head(self.embed_dim, d, out_dim, cfg.dropout)])
        # aux_loss: every branch (each stream's readout, the summary) also has a head of its own,
        # trained on the task by itself, so no branch is left unlearned behind one that fits faster
        self.branch_heads = nn.ModuleList(head(w, d, out_dim, cfg.dropout) for w in self.branch_widths
                                          ) if branch_heads else nn.ModuleList()
        # which output predicts: -1 the fused head, i branch i's own head. Training picks it by val
        # loss each epoch, so the model is never worse on val than its best branch (docs/ablations.md)
        if len(self.branch_heads):
            self.register_buffer("selected", torch.tensor(-1))
        self.apply(_init)
        for enc in (s.encoder for s in (self.spatial, self.temporal) if s is not None):
            nn.init.normal_(enc.cls, std=0.02)

    def readout(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A stream's summary: its CLS token [B, d], the mean of its frame tokens [B, d], or both
        side by side [B, 2d] (`pool`: cls | mean | both).

        After a block's MLP each frame token is a nonlinear function of (content, time), so their
        mean already differs between two videos holding the same frames in another order; a CLS
        token only sees that through attention weights, which start uniform, and with little data
        training can sit on that plateau (the order and position tasks of the events benchmark).
        """
        if self.cfg.pool == "cls":
            return tokens[:, 0]
        m = mask[:, 1:, None].to(tokens.dtype)
        mean = (tokens[:, 1:] * m).sum(1) / m.sum(1).clamp(min=1)
        return mean if self.cfg.pool == "mean" else torch.cat([tokens[:, 0], mean], dim=-1)

    @property
    def branch_widths(self) -> list[int]:
        """Widths of the parts of `embed`'s output: each stream's readout (one for sum), the summary."""
        width = 2 * self.cfg.width if self.cfg.pool == "both" else self.cfg.width
        n = {"none": 0, "single": 1, "sum": 1}.get(self.fusion, 2)
        return [width] * n + ([self.cfg.width] if self.events is not None else [])

    @property
    def branch_names(self) -> list[str]:
        streams = {"none": [], "single": [self.cfg.streams], "sum": ["streams"]}.get(self.fusion,
                                                                                 ["spatial", "temporal"])
        return streams + (["summary"] if self.events is not None else [])

    @property
    def output_names(self) -> list[str]:
        """Names of `outputs`' logits, in order: the fused head, then each branch head (aux_loss)."""
        return ["fused"] + (self.branch_names if len(self.branch_heads) else [])

    @property
    def embed_dim(self) -> int:
        """Width of `embed`'s output: both readouts side by side (one for sum and one stream), + summary."""
        return sum(self.branch_widths)

    def embed(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The video's representation [B, embed_dim], what the head reads (and pre-training trains)."""
        x, t = self.inputs(x, t, mask)
        a = self.events.assign(x, mask) if any(self.assigned.values()) else None
        xs, xt = (a if self.assigned[s] else x for s in ("spatial", "temporal"))
        rec = recurrence(x, t, mask) if self.recurrence else None
        z = self.streams(xs, xt, t, mask, rec)
        if self.events is not None:
            z = torch.cat([z, self.events(x, t, mask, rec)], dim=-1)
        return z

    def inputs(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames as the branches read them: projected (`pca_dims`), padding zeroed."""
        if self.project is not None:
            x = self.project(x)
        return _zero_padding(x, t, mask)

    def summary_numbers(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The event summary's numbers [B, n] as `embed` computes them, before their centring."""
        return self.events.stats(*self.inputs(x, t, mask), mask)

    def streams(self, xs: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, mask: torch.Tensor,
                rec: torch.Tensor | None) -> torch.Tensor:
        """The streams' readouts: the spatial stream reads xs, the temporal xt (the frames or their
        assignments, `stream_input`) and the frames' recurrence `rec`."""
        if self.fusion == "none":  # the event summary alone (an ablation)
            return xs.new_zeros(len(xs), 0)
        if self.fusion == "single":
            if self.spatial is not None:
                return self.readout(*self.spatial(xs, t, mask))
            return self.readout(*self.temporal(xt, t, mask, rec))
        s, sm = self.spatial(xs, t, mask)
        u, um = self.temporal(xt, t, mask, rec)
        for to_u, to_s in self.cross:  # bidirectional: both directions read the previous layer
            s, u = to_u(s, sm, u, um), to_s(u, um, s, sm)
        cs, cu = self.readout(s, sm), self.readout(u, um)
        return cs + cu if self.fusion == "sum" else torch.cat([cs, cu], dim=-1)

    def branches(self, z: torch.Tensor) -> list[torch.Tensor]:
        return list(z.split(self.branch_widths, dim=-1))

    def drop_branches(self, z: torch.Tensor) -> torch.Tensor:
        """Training: each branch of `z` zeroed with probability `branch_drop` (never all of them),
        so the head learns to read every branch alone and a fused model cannot lean on one."""
        parts = self.branches(z)
        keep = torch.rand(len(z), len(parts), device=z.device) >= self.branch_drop
        none = ~keep.any(1)
        keep[none, torch.randint(len(parts), (int(none.sum()),), device=z.device)] = True
        return torch.cat([p * k[:, None].to(p.dtype) for p, k in zip(parts, keep.unbind(1), strict=True)], -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, out] from features x [B,T,D], timestamps t [B,T], mask [B,T] (True = real):
        the fused head's, or the branch head's that training selected."""
        logits, aux = self.outputs(x, t, mask)
        k = int(self.selected) if len(aux) else -1
        return logits if k < 0 else aux[k]

    def outputs(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(fused logits, each branch head's logits): aux_loss trains the second (empty without it)."""
        z = self.embed(x, t, mask)
        aux = [h(p) for h, p in zip(self.branch_heads, self.branches(z), strict=True)
               ] if len(self.branch_heads) else []
        if self.training and self.branch_drop and len(self.branch_widths) > 1:
            z = self.drop_branches(z)
        if self.fusion == "late":
            ev = self.cfg.width if self.events is not None else 0
            d = (z.shape[1] - ev) // 2
            zs, zu, e = z[:, :d], z[:, d:2 * d], z[:, 2 * d:]
            return (self.heads[0](torch.cat([zs, e], -1)) + self.heads[1](torch.cat([zu, e], -1))) / 2, aux
        return self.heads[0](z), aux


class MeanPool(nn.Module):
    """Baseline: the mean of the frame features, then an MLP. Blind to order by construction."""

    def __init__(self, cfg: MeanPoolConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.head = head(in_dim, cfg.hidden, out_dim, cfg.dropout)
        self.apply(_init)

    def forward(self, x, t, mask):
        x, _ = _zero_padding(x, t, mask)
        return self.head(x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype))

    def outputs(self, x, t, mask) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self(x, t, mask), []

    output_names = ("head",)


def _init(mod: nn.Module) -> None:
    if isinstance(mod, nn.Linear):
        nn.init.normal_(mod.weight, std=0.02)
        if mod.bias is not None:
            nn.init.zeros_(mod.bias)


def build_model(cfg: Config, in_dim: int, out_dim: int) -> nn.Module:
    """The network `cfg.model` names, from its part of the options (and, for STAN, the branch
    heads and branch dropout that `cfg.loss` asks training for)."""
    if cfg.model == "meanpool":
        return MeanPool(cfg.meanpool, in_dim, out_dim)
    return STAN(cfg.stan, in_dim, out_dim, branch_heads=cfg.loss.aux_loss > 0,
                branch_drop=cfg.loss.branch_drop)
