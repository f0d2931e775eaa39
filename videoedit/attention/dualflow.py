"""Dual-flow attention: reuse the previous edited frame where the edit moves like the source, a memory
bank of trusted keyframes where it does not.

Idea from the "Dual-Flow Check" / "Dynamic Memory Bank + Multi-State Attention" change log of a StreamV2V
fork (Liao-Jun/streamv2v, ``change.md``); the code here is ours and fixes that write-up's defects: the
generated flow is measured on generated frames, the bias penalises *high* discrepancy, the previous
frame is warped with the flow current -> previous, masks are resized to each layer's ``(h, w)`` token
grid (tokens are row-major ``h*w``), and keyframe admission uses per-pixel means.

Self-attention of frame ``t`` (queries ``q``, ``N`` tokens) runs over three key groups::

    keys   = [ own K (N)  |  previous frame's K warped into t (N)  |  bank K (S * N) ]
    bias   = [ 0          |  -lambda * M(q)                         |  -lambda * (1 - M(q)) ]

where ``M(q)`` in [0, 1] is the flow-discrepancy mask of frame ``t`` at the query's token
(:mod:`videoedit.motion.discrepancy`). Own keys are never biased, so no row is ever fully masked; missing
groups (frame 0 has no previous frame, empty bank slots) get ``-inf``. ``lambda`` (``bias_scale``) sets the
gating: about 1-10 is *soft* (a fully discrepant query still keeps ``exp(-lambda)`` of its weight on the
previous frame), 1e4 (the change log's value) is *hard* (any ``M`` above ~1e-3 switches the previous frame
off). With ``lambda = 0`` and no bank this is plain extended attention over the frame and its warped
predecessor; with one frame and nothing cached it is ``AttnProcessor2_0``.

**Which previous-frame keys** (``prev_reuse``, :class:`DualFlowContext`):

* ``"global"`` (the change log's form): all ``N`` keys of the previous frame, warped into frame ``t``.
  Softmax attention is invariant to the order of its keys, so the warp changes the output only through
  keys the border padding duplicates or drops: permuting the previous frame's tokens changes nothing
  (tested), and the flow acts through ``M`` alone ("reuse its content anywhere where motion agrees").
* ``"window"``: query ``p`` reads only the ``k x k`` previous-frame tokens around its flow target
  ``c = p + flow(p)`` (the rounded target and its neighbours), with the same ``-lambda * M(p)`` plus a
  distance bias ``-gamma * |n - c|^2`` (tokens) and a prior ``beta(p)``. By default
  ``beta(p) = log N - log sum_n exp(-gamma |n - c|^2)``: the window carries the prior weight that the
  ``N`` keys of the global form give the previous frame, concentrated at the correspondence (with equal
  scores both forms give the previous frame the same share of attention). One joint softmax over own
  keys, window keys and bank keys, computed exactly without any ``N x N`` bias: the window's scores are
  gathered (``O(N k^2 d)``) and its log-partition enters the fused SDPA call as a single extra key.
* ``"blend"``: direct warped-value blending gated by ``M``: ``out = (1 - g) * A + g * warp(V_prev)`` with
  ``g = blend_weight * (1 - M)`` and ``A`` the attention over own and bank keys.

Memory: ``"global"`` runs one ``F.scaled_dot_product_attention`` call per chunk of frames with an
additive float mask ``(chunk, 1, N, keys)`` (``chunk_size`` bounds it); ``"window"`` and ``"blend"``
build no mask at all: per-query group biases ride on extra query/key channels of one fused SDPA call
(:func:`grouped_attention`), and the window costs ``O(N k^2)`` scores. Never a loop over heads.
"""

from __future__ import annotations

import fnmatch
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from videoedit.attention.base import AttentionCall, AttentionProcessorBase
from videoedit.attention.state import StepState
from videoedit.motion import compose, resize_flow, warp
from videoedit.motion.discrepancy import motion_magnitude

Mode = Literal["lockstep", "streaming"]
PrevReuse = Literal["global", "window", "blend"]
PREV_REUSE = ("global", "window", "blend")

# ------------------------------------------------------------------------------------------- tensor code


def warp_tokens(x: torch.Tensor, flow: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Backward-warp tokens ``x (B, heads, N, d)`` laid out row-major on ``grid = (h, w)`` with
    ``flow (B, 2, h, w)`` (in tokens): ``out(p) = x(p + flow(p))``, border padding."""
    b, heads, n, d = x.shape
    h, w = grid
    if h * w != n or tuple(flow.shape[-2:]) != (h, w):
        raise ValueError(f"{n} tokens, grid {grid} and flow {tuple(flow.shape)} do not match")
    maps = x.permute(0, 1, 3, 2).reshape(b, heads * d, h, w)
    out = warp(maps, flow.to(x.device))
    return out.reshape(b, heads, d, n).permute(0, 1, 3, 2)


def mask_to_tokens(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Masks ``(B, 1, H, W)`` averaged onto a token grid and flattened row-major: ``(B, h*w)``."""
    if tuple(mask.shape[-2:]) != tuple(grid):
        mask = F.interpolate(mask.float(), size=grid, mode="area")
    return mask.flatten(1)


def dualflow_bias(
    mask: torch.Tensor,
    num_own: int,
    bias_scale: float,
    prev_valid: torch.Tensor | None = None,
    num_prev: int = 0,
    bank_valid: torch.Tensor | None = None,
    slot_len: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The additive attention bias ``(B, 1, N, num_own + num_prev + S * slot_len)``.

    Args:
        mask: ``(B, N)`` discrepancy ``M`` in [0, 1] per query token.
        prev_valid: ``(B,)`` bool, whether the previous-frame group exists (``-inf`` where not).
        bank_valid: ``(B, S)`` bool, which bank slots hold a keyframe (``-inf`` where not).
    """
    b, n = mask.shape
    device = mask.device
    slots = bank_valid.shape[1] if bank_valid is not None and slot_len else 0
    # one (B, 1, N, keys) tensor filled group by group with broadcast writes (no concatenation)
    bias = torch.empty(b, 1, n, num_own + num_prev + slots * slot_len, dtype=dtype, device=device)
    bias[..., :num_own] = 0
    m = mask.to(dtype)[:, None, :, None]  # (B, 1, N, 1)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=device)
    if num_prev:
        prev = -bias_scale * m
        if prev_valid is not None:
            prev = torch.where(prev_valid.view(b, 1, 1, 1).to(device), prev, neg_inf)
        bias[..., num_own : num_own + num_prev] = prev
    if slots:
        bank = -bias_scale * (1 - m)
        for s in range(slots):
            start = num_own + num_prev + s * slot_len
            bias[..., start : start + slot_len] = torch.where(
                bank_valid[:, s].view(b, 1, 1, 1).to(device), bank, neg_inf
            )
    return bias


def dualflow_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    bias_scale: float,
    scale: float | None = None,
    key_prev: torch.Tensor | None = None,
    value_prev: torch.Tensor | None = None,
    prev_valid: torch.Tensor | None = None,
    key_bank: torch.Tensor | None = None,
    value_bank: torch.Tensor | None = None,
    bank_valid: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dual-flow attention ``(B, heads, N, d)`` (see the module docstring).

    Args:
        query, key, value: ``(B, heads, N, d)``, the frame's own projections.
        mask: ``(B, N)`` discrepancy per query token.
        key_prev, value_prev: ``(B, heads, N, d)`` the previous frame's, already warped into this frame.
        prev_valid: ``(B,)`` bool (default all True when ``key_prev`` is given).
        key_bank, value_bank: ``(B, heads, S * N_b, d)`` the bank's keyframes, slot after slot.
        bank_valid: ``(B, S)`` bool (default all True).
        chunk_size: items of the batch per SDPA call (bounds the bias' memory); ``None`` = all.
    """
    b = query.shape[0]
    keys, values = [key], [value]
    num_prev, slot_len = 0, 0
    if key_prev is not None:
        keys.append(key_prev)
        values.append(value_prev)
        num_prev = key_prev.shape[2]
        if prev_valid is None:
            prev_valid = torch.ones(b, dtype=torch.bool, device=query.device)
    if key_bank is not None and key_bank.shape[2]:
        if bank_valid is None:
            raise ValueError("key_bank needs bank_valid (B, S) to know its slots")
        keys.append(key_bank)
        values.append(value_bank)
        slot_len = key_bank.shape[2] // bank_valid.shape[1]
    else:
        bank_valid = None
    if len(keys) == 1:
        return F.scaled_dot_product_attention(query, key, value, scale=scale)
    keys, values = torch.cat(keys, dim=2), torch.cat(values, dim=2)
    step = chunk_size or b
    out = []
    for s in range(0, b, step):
        sl = slice(s, s + step)
        bias = dualflow_bias(
            mask[sl],
            key.shape[2],
            bias_scale,
            None if prev_valid is None else prev_valid[sl],
            num_prev,
            None if bank_valid is None else bank_valid[sl],
            slot_len,
            dtype=query.dtype,
        )
        out.append(
            F.scaled_dot_product_attention(query[sl], keys[sl], values[sl], attn_mask=bias, scale=scale)
        )
    return torch.cat(out)


# ------------------------------------------------------------------------------ flow-aligned reuse


@dataclass(frozen=True)
class FlowWindow:
    """The ``k x k`` previous-frame tokens around each query's flow target.

    Attributes:
        index: ``(B, N, K)`` long, row-major token index into the previous frame (``K = k * k``; clamped
            into the grid, meaningful where ``valid``).
        valid: ``(B, N, K)`` bool, the neighbour lies inside the grid (and the flow is finite).
        dist2: ``(B, N, K)`` float, squared distance in tokens from the (sub-token) target ``p + flow(p)``.
    """

    index: torch.Tensor
    valid: torch.Tensor
    dist2: torch.Tensor

    def repeat(self, groups: int) -> FlowWindow:
        """The same windows for ``groups`` copies of the batch (CFG branches), batch-major."""
        return FlowWindow(*(x.repeat(groups, 1, 1) for x in (self.index, self.valid, self.dist2)))

    def __getitem__(self, sl: slice) -> FlowWindow:
        return FlowWindow(self.index[sl], self.valid[sl], self.dist2[sl])


def flow_window(flow: torch.Tensor, window_size: int) -> FlowWindow:
    """Windows of ``window_size x window_size`` tokens centred on the rounded flow targets.

    Args:
        flow: ``(B, 2, h, w)`` backward flow ``t -> t-1`` in tokens (``videoedit.motion`` conventions):
            query ``p`` of frame ``t`` shows the content at ``p + flow(p)`` of frame ``t-1``.
        window_size: odd ``k >= 1``.
    """
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd number >= 1, got {window_size}")
    b, _, h, w = flow.shape
    flow = flow.float()
    finite = torch.isfinite(flow).all(1)  # (B, h, w)
    flow = torch.nan_to_num(flow, nan=0.0, posinf=0.0, neginf=0.0)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=torch.float32),
        torch.arange(w, device=flow.device, dtype=torch.float32),
        indexing="ij",
    )
    tx, ty = xs + flow[:, 0], ys + flow[:, 1]  # (B, h, w) targets in the previous frame
    r = window_size // 2
    offsets = torch.arange(-r, r + 1, device=flow.device, dtype=torch.float32)
    oy, ox = (o.flatten() for o in torch.meshgrid(offsets, offsets, indexing="ij"))  # (K,) row-major
    nx = tx.round()[..., None] + ox  # (B, h, w, K)
    ny = ty.round()[..., None] + oy
    valid = (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1) & finite[..., None]
    dist2 = (nx - tx[..., None]).square() + (ny - ty[..., None]).square()
    index = ny.clamp(0, h - 1).long() * w + nx.clamp(0, w - 1).long()
    k2 = window_size * window_size
    return FlowWindow(index.view(b, h * w, k2), valid.view(b, h * w, k2), dist2.view(b, h * w, k2))


def window_bias(
    mask: torch.Tensor,
    window: FlowWindow,
    bias_scale: float,
    distance_bias: float,
    prior: float | None,
    num_prev: int,
    prev_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The additive bias ``(B, N, K)`` (float32) of the window keys:
    ``-lambda * M(p) + beta(p) - gamma * dist2``, ``-inf`` outside the grid or without a previous frame.

    Args:
        mask: ``(B, N)`` discrepancy per query.
        distance_bias: ``gamma`` (per squared token).
        prior: ``beta``; ``None`` = ``log(num_prev) - logsumexp(-gamma * dist2 over the valid window)``,
            the prior weight of the ``num_prev`` keys of the global form (module docstring).
        prev_valid: ``(B,)`` bool, whether the previous frame exists (default: all).
    """
    near = -distance_bias * window.dist2.float()  # (B, N, K)
    neg_inf = torch.tensor(float("-inf"), device=near.device)
    valid = window.valid
    if prev_valid is not None:
        valid = valid & prev_valid.to(valid.device).view(-1, 1, 1)
    near = torch.where(valid, near, neg_inf)
    if prior is None:
        beta = math.log(num_prev) - near.logsumexp(-1, keepdim=True)  # +inf where nothing is valid
        beta = torch.where(torch.isfinite(beta), beta, torch.zeros_like(beta))
    else:
        beta = float(prior)
    return near + beta - bias_scale * mask.float()[..., None]


def window_attention(
    query: torch.Tensor,
    key_prev: torch.Tensor,
    value_prev: torch.Tensor,
    window: FlowWindow,
    bias: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of each query over its window of previous-frame tokens, by index gather: ``O(N K d)``
    time and one gathered ``(B, heads, N * K, d)`` tensor at a time (``K`` times the keys' size; bound it
    with the caller's ``chunk_size``).

    Args:
        query: ``(B, heads, N, d)``.
        key_prev, value_prev: ``(B, heads, N_prev, d)`` the previous frame's, NOT warped.
        window: :func:`flow_window` on the query's grid, indices into ``N_prev``.
        bias: ``(B, N, K)`` additive (``-inf`` = excluded), see :func:`window_bias`.
        scale: the softmax scale.

    Returns:
        ``(out (B, heads, N, d), lse (B, heads, N))``: the window's softmax-weighted values and the
        log-partition ``log sum_K exp(scale * q.k + bias)`` (float32; ``-inf`` where no key is valid,
        with ``out`` zero there).
    """
    b, heads, n, d = query.shape
    k2 = window.index.shape[-1]
    if window.index.shape[:2] != (b, n) or bias.shape != window.index.shape:
        raise ValueError(
            f"window {tuple(window.index.shape)} and bias {tuple(bias.shape)} do not match queries {(b, n)}"
        )
    idx = window.index.to(query.device).view(b, 1, n * k2, 1).expand(b, heads, n * k2, d)
    near = key_prev.gather(2, idx).view(b, heads, n, k2, d)
    scores = torch.einsum("bhnd,bhnkd->bhnk", query, near).float() * scale + bias.to(query.device)[:, None]
    del near
    lse = scores.logsumexp(-1)  # (B, heads, N)
    weights = torch.nan_to_num((scores - lse[..., None]).exp(), nan=0.0)  # rows without keys: 0
    near = value_prev.gather(2, idx).view(b, heads, n, k2, d)
    return torch.einsum("bhnk,bhnkd->bhnd", weights.to(query.dtype), near), lse


@dataclass
class KeyGroup:
    """Keys/values ``(B, heads, M, d)`` with an optional per-query bias ``row_bias (B, N)`` (added to all
    of the group's keys) and optional ``off (B, M)`` bool keys excluded per batch item."""

    key: torch.Tensor
    value: torch.Tensor
    row_bias: torch.Tensor | None = None
    off: torch.Tensor | None = None


def grouped_attention(
    query: torch.Tensor,
    groups: Sequence[KeyGroup],
    scale: float,
    sink: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention over key groups with per-query group biases, in ONE fused SDPA call and with no
    ``(N, keys)`` mask: each bias rides on an extra channel (``q' = [q, bias/scale]``, ``k' = [k, 1]``,
    so ``scale * q'.k' = scale * q.k + bias``), excluded keys on a channel whose query value is a large
    negative number.

    ``sink (B, heads, N)`` (a log-weight per query, e.g. another group's log-partition) adds one extra key
    whose score is exactly ``sink`` and whose value is zero except on one extra channel: its softmax
    weight is returned, so that the caller can add that group's own normalised output with it (an exact
    joint softmax with a group of per-query keys that SDPA cannot hold).

    Args:
        query: ``(B, heads, N, d)``.
        groups: the :class:`KeyGroup` s (the first is usually the frame's own keys, unbiased).
        scale: the softmax scale.

    Returns:
        ``(out (B, heads, N, d), sink weight (B, heads, N) or None)``.
    """
    b, heads, n, d = query.shape
    dtype, device = query.dtype, query.device
    biased = [g for g in groups if g.row_bias is not None]
    any_off = any(g.off is not None for g in groups)
    extra = len(biased) + int(any_off) + int(sink is not None)
    if extra == 0:
        out = F.scaled_dot_product_attention(
            query, torch.cat([g.key for g in groups], 2), torch.cat([g.value for g in groups], 2), scale=scale
        )
        return out, None
    width = d + extra
    if device.type == "cuda":  # fused CUDA kernels want head dims in multiples of 8
        width = -(-width // 8) * 8
    limit = torch.finfo(dtype).max / 16 if dtype.is_floating_point else 1e30
    neg = max(-1e4 / scale, -limit)  # a score of -1e4: exp() is 0

    def q_channel(values: torch.Tensor) -> torch.Tensor:  # (B, heads or 1, N) in score units
        return (values.float() / scale).nan_to_num(neg).clamp(neg, limit).to(dtype)

    q = torch.zeros(b, heads, n, width, dtype=dtype, device=device)
    q[..., :d] = query
    channel = d
    group_channel: dict[int, int] = {}
    for g in biased:
        group_channel[id(g)] = channel
        q[..., channel] = q_channel(g.row_bias.to(device)[:, None])
        channel += 1
    off_channel = channel if any_off else None
    if any_off:
        q[..., channel] = neg
        channel += 1
    keys, values = [], []
    for g in groups:
        m = g.key.shape[2]
        k = torch.zeros(b, heads, m, width, dtype=dtype, device=device)
        k[..., :d] = g.key
        if id(g) in group_channel:
            k[..., group_channel[id(g)]] = 1
        if g.off is not None:
            k[..., off_channel] = g.off.to(device)[:, None].to(dtype)
        v = torch.zeros(b, heads, m, width, dtype=dtype, device=device)
        v[..., :d] = g.value
        keys.append(k)
        values.append(v)
    if sink is not None:
        q[..., channel] = q_channel(sink.to(device))
        k = torch.zeros(b, heads, 1, width, dtype=dtype, device=device)
        k[..., channel] = 1
        v = torch.zeros(b, heads, 1, width, dtype=dtype, device=device)
        v[..., d] = 1
        keys.append(k)
        values.append(v)
    out = F.scaled_dot_product_attention(q, torch.cat(keys, 2), torch.cat(values, 2), scale=scale)
    return out[..., :d], (out[..., d] if sink is not None else None)


def _own_and_bank(
    items: slice,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    bias_scale: float,
    key_bank: torch.Tensor | None,
    value_bank: torch.Tensor | None,
    bank_valid: torch.Tensor | None,
) -> list[KeyGroup]:
    """Own keys (unbiased) and the bank's (``-lambda * (1 - M)``, empty slots off), for the batch ``items``."""
    key, value, mask = key[items], value[items], mask[items]
    key_bank, value_bank, bank_valid = (
        None if t is None else t[items] for t in (key_bank, value_bank, bank_valid)
    )
    groups = [KeyGroup(key, value)]
    if key_bank is not None and key_bank.shape[2]:
        if bank_valid is None:
            raise ValueError("key_bank needs bank_valid (B, S) to know its slots")
        slot_len = key_bank.shape[2] // bank_valid.shape[1]
        off = None
        if not bool(bank_valid.all()):
            off = (~bank_valid.bool()).repeat_interleave(slot_len, dim=1)
        groups.append(KeyGroup(key_bank, value_bank, -bias_scale * (1 - mask.float()), off))
    return groups


def window_reuse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    bias_scale: float,
    scale: float | None,
    key_prev: torch.Tensor | None,
    value_prev: torch.Tensor | None,
    prev_valid: torch.Tensor | None,
    window: FlowWindow | None,
    distance_bias: float = 0.5,
    prior: float | None = None,
    key_bank: torch.Tensor | None = None,
    value_bank: torch.Tensor | None = None,
    bank_valid: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dual-flow attention with the previous frame restricted to each query's flow window
    (``prev_reuse="window"``, module docstring): one joint softmax over own keys (bias 0), the window's
    ``K`` previous-frame keys (:func:`window_bias`) and the bank's keys (``-lambda * (1 - M)``).

    Args:
        query, key, value: ``(B, heads, N, d)``, the frame's own projections.
        mask: ``(B, N)`` discrepancy per query token.
        key_prev, value_prev: ``(B, heads, N, d)`` the previous frame's, NOT warped (``None``: no
            previous frame anywhere in the batch).
        prev_valid: ``(B,)`` bool (default all True).
        window: :func:`flow_window` of the flows ``t -> t-1`` at this grid, ``(B, N, K)``.
        distance_bias, prior: ``gamma`` and ``beta`` of :func:`window_bias`.
        key_bank, value_bank, bank_valid: as :func:`dualflow_attention`.
        chunk_size: items of the batch per call (bounds the window gather); ``None`` = all.
    """
    b, d = query.shape[0], query.shape[-1]
    scale = d**-0.5 if scale is None else scale
    step = chunk_size or b
    out = []
    for s in range(0, b, step):
        sl = slice(s, s + step)
        groups = _own_and_bank(sl, key, value, mask, bias_scale, key_bank, value_bank, bank_valid)
        if key_prev is None:
            out.append(grouped_attention(query[sl], groups, scale)[0])
            continue
        bias = window_bias(
            mask[sl],
            window[sl],
            bias_scale,
            distance_bias,
            prior,
            key_prev.shape[2],
            None if prev_valid is None else prev_valid[sl],
        )
        win_out, lse = window_attention(query[sl], key_prev[sl], value_prev[sl], window[sl], bias, scale)
        main, weight = grouped_attention(query[sl], groups, scale, sink=lse)
        out.append(main + weight[..., None].to(main.dtype) * win_out)
    return torch.cat(out)


def blend_reuse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    bias_scale: float,
    scale: float | None,
    value_prev_warped: torch.Tensor | None,
    prev_valid: torch.Tensor | None,
    blend_weight: float = 0.5,
    key_bank: torch.Tensor | None = None,
    value_bank: torch.Tensor | None = None,
    bank_valid: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Warped-value blending gated by the discrepancy (``prev_reuse="blend"``, module docstring):
    ``(1 - g) * A + g * V_prev(p + flow(p))`` with ``g = blend_weight * (1 - M(p))`` (0 without a
    previous frame) and ``A`` the attention over own keys and bank keys (``-lambda * (1 - M)``).

    Args:
        value_prev_warped: ``(B, heads, N, d)`` the previous frame's values warped into this frame
            (:func:`warp_tokens`), or ``None``.
        Others: as :func:`window_reuse_attention`.
    """
    b, d = query.shape[0], query.shape[-1]
    scale = d**-0.5 if scale is None else scale
    step = chunk_size or b
    out = []
    for s in range(0, b, step):
        sl = slice(s, s + step)
        groups = _own_and_bank(sl, key, value, mask, bias_scale, key_bank, value_bank, bank_valid)
        attended = grouped_attention(query[sl], groups, scale)[0]
        if value_prev_warped is None:
            out.append(attended)
            continue
        gate = blend_weight * (1 - mask[sl].float())
        if prev_valid is not None:
            gate = gate * prev_valid[sl].to(gate.device).float()[:, None]
        gate = gate[:, None, :, None].to(attended.dtype)  # (B, 1, N, 1)
        out.append((1 - gate) * attended + gate * value_prev_warped[sl])
    return torch.cat(out)


# ------------------------------------------------------------------------------------------- memory bank


@dataclass
class Admission:
    """What :meth:`MemoryBank.observe` decided for one frame."""

    frame: int
    motion: float
    discrepancy: float
    admitted: bool
    evicted: int | None = None


class MemoryBank:
    """Which frames are keyframes: the anchor (first frame, always kept) plus up to ``size`` dynamic ones.

    A frame is admitted when the source motion accumulated since the last keyframe (per-pixel mean of
    the composed flow ``t -> keyframe``, in pixels) exceeds ``motion_threshold`` AND the frame's
    discrepancy (its admission score: the per-pixel mean discrepancy over non-occluded pixels, in [0, 1],
    see :mod:`videoedit.motion.discrepancy`) is below ``quality_threshold``. When full, the oldest dynamic
    keyframe is evicted; the anchor never is. Pure bookkeeping: the caller stores the keyframes' features.

    Args:
        size: maximum number of dynamic keyframes (0 = anchor only; the fork's pipeline default 5, CLI 2).
        motion_threshold: pixels of accumulated motion (the fork: 2.0, then a global norm).
        quality_threshold: maximum mean discrepancy (the fork: 0.2, then a global norm).
        use_anchor: keep the first frame in the bank.
        max_history: the decisions kept in :attr:`history` (the most recent ones; ``None`` = all), so
            that the bank's memory does not grow with the clip length.
    """

    def __init__(
        self,
        size: int = 2,
        motion_threshold: float = 2.0,
        quality_threshold: float = 0.2,
        use_anchor: bool = True,
        max_history: int | None = 1024,
    ) -> None:
        if size < 0:
            raise ValueError(f"bank size must be >= 0, got {size}")
        self.size = int(size)
        self.motion_threshold = float(motion_threshold)
        self.quality_threshold = float(quality_threshold)
        self.use_anchor = bool(use_anchor)
        self.max_history = max_history
        self.anchor: int | None = None
        self.dynamic: list[int] = []
        self._flow_to_keyframe: torch.Tensor | None = None
        self.history: deque[Admission] = deque(maxlen=max_history)
        self.observed = 0  # decisions taken since start() (history keeps the last max_history)

    @property
    def capacity(self) -> int:
        """Most keyframes the bank ever holds."""
        return int(self.use_anchor) + self.size

    @property
    def frames(self) -> list[int]:
        """Current keyframes, anchor first, then dynamic ones oldest first."""
        anchor = [self.anchor] if self.use_anchor and self.anchor is not None else []
        return anchor + list(self.dynamic)

    def start(self, frame: int = 0) -> None:
        """Make ``frame`` the anchor and the motion reference; forget everything else."""
        self.anchor = int(frame)
        self.dynamic = []
        self._flow_to_keyframe = None
        self.history = deque(maxlen=self.max_history)
        self.observed = 0

    def observe(self, frame: int, flow_to_prev: torch.Tensor, discrepancy: float) -> Admission:
        """Frame ``frame`` follows the last observed one; ``flow_to_prev (1, 2, H, W)`` is its source flow
        ``t -> t-1``. Returns the decision (and applies it)."""
        if self.anchor is None:
            raise RuntimeError("MemoryBank.start(anchor) must be called before observe()")
        acc = (
            flow_to_prev if self._flow_to_keyframe is None else compose(flow_to_prev, self._flow_to_keyframe)
        )
        motion = float(motion_magnitude(acc)[0])
        admitted = self.size > 0 and motion > self.motion_threshold and discrepancy < self.quality_threshold
        evicted = None
        if admitted:
            self.dynamic.append(int(frame))
            if len(self.dynamic) > self.size:
                evicted = self.dynamic.pop(0)
            self._flow_to_keyframe = None
        else:
            self._flow_to_keyframe = acc
        decision = Admission(int(frame), motion, float(discrepancy), admitted, evicted)
        self.history.append(decision)
        self.observed += 1
        return decision


def lockstep_banks(
    bank: MemoryBank, flows_to_prev: torch.Tensor, discrepancies: Sequence[float]
) -> torch.Tensor:
    """Run the admission rule over frames ``1..F-1`` in order; frame ``t`` attends to the keyframes
    admitted before it. Returns ``(F, capacity)`` frame indices, ``-1`` for empty slots (frame 0: none).

    Args:
        flows_to_prev: ``(F, 2, H, W)`` source flows ``t -> t-1`` (index 0 unused).
        discrepancies: per-frame mean discrepancy (index 0 unused).
    """
    num = flows_to_prev.shape[0]
    out = torch.full((num, bank.capacity), -1, dtype=torch.long)
    bank.start(0)
    for t in range(1, num):
        frames = bank.frames
        out[t, : len(frames)] = torch.tensor(frames, dtype=torch.long)
        bank.observe(t, flows_to_prev[t : t + 1], float(discrepancies[t]))
    return out


# ------------------------------------------------------------------------------------------- processor

KVStore = dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]


def step_in_range(step: int, num_steps: int, step_range: tuple[float, float]) -> bool:
    """Whether 0-based ``step`` of ``num_steps`` lies in the ``[start, end)`` fraction ``step_range``
    (bounds rounded to 1e-9 so that e.g. 0.3 of 10 steps is step 3, not 3.0000000000000004)."""
    start, end = step_range
    return round(start * num_steps, 9) <= step < round(end * num_steps, 9)


@dataclass
class DualFlowContext:
    """State shared by the dual-flow processors of one UNet, written by the pipeline.

    Attributes:
        state: the pipeline's :class:`StepState`.
        mode: ``"lockstep"`` (all frames in the batch, the previous frame taken from it) or
            ``"streaming"`` (one frame per batch; the previous frame and the bank from caches).
        bias_scale: lambda.
        step_range: ``[start, end)`` fraction of the sampling steps where the processor acts.
        resolutions: token-grid downsample factors (1 = latent grid, 2, 4, 8) where it acts; ``None`` = all.
        chunk_size: frames per SDPA call.
        prev_reuse: which previous-frame keys a query reads: ``"global"``, ``"window"`` or ``"blend"``
            (module docstring).
        window_size, distance_bias, window_prior: the window's ``k``, ``gamma`` and ``beta``
            (:func:`window_bias`; ``None`` = the global form's prior weight).
        blend_weight: the blend's gate at ``M = 0``.
        flows: ``(F, 2, h, w)`` source flows ``t -> t-1`` at latent resolution for the frames of the batch.
        masks: ``(F, 1, h, w)`` discrepancy masks of those frames.
        prev_valid: ``(F,)`` bool, frames that have a previous frame.
        bank_index: lockstep: ``(F, S)`` bank frame indices into the batch, ``-1`` = empty.
        prev_kv / bank_kv / record: streaming: the previous frame's K/V per ``(layer, step)``, the
            keyframes' stores, and the store being filled by the current frame.
    """

    state: StepState
    mode: Mode = "lockstep"
    bias_scale: float = 10.0
    step_range: tuple[float, float] = (0.0, 1.0)
    resolutions: tuple[int, ...] | None = None
    chunk_size: int | None = None
    prev_reuse: PrevReuse = "global"
    window_size: int = 3
    distance_bias: float = 0.5
    window_prior: float | None = None
    blend_weight: float = 0.5
    flows: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    prev_valid: torch.Tensor | None = None
    bank_index: torch.Tensor | None = None
    prev_kv: KVStore | None = None
    bank_kv: list[KVStore] = field(default_factory=list)
    record: KVStore | None = None
    _grid_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.prev_reuse not in PREV_REUSE:
            raise ValueError(f"prev_reuse must be one of {PREV_REUSE}, got {self.prev_reuse!r}")
        if self.window_size < 1 or self.window_size % 2 == 0:
            raise ValueError(f"window_size must be an odd number >= 1, got {self.window_size}")

    def set_frames(
        self,
        flows: torch.Tensor,
        masks: torch.Tensor,
        prev_valid: torch.Tensor | None = None,
        bank_index: torch.Tensor | None = None,
    ) -> None:
        """New flows/masks (and lockstep bank layout) for the frames of the batch."""
        self.flows, self.masks = flows.float(), masks.float()
        num = flows.shape[0]
        self.prev_valid = torch.arange(num) > 0 if prev_valid is None else prev_valid.bool()
        self.bank_index = bank_index
        self._grid_cache = {}

    def step_active(self) -> bool:
        s = self.state
        if s.phase != "sample" or self.flows is None:
            return False
        return step_in_range(s.step_index, s.num_steps, self.step_range)

    def layer_active(self, factor: int) -> bool:
        return self.resolutions is None or factor in self.resolutions

    def at_grid(self, grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows ``(F, 2, h, w)`` (in tokens) and masks ``(F, h*w)`` at a token grid (cached per update)."""
        if grid not in self._grid_cache:
            self._grid_cache[grid] = (
                resize_flow(self.flows, grid).to(device),
                mask_to_tokens(self.masks, grid).to(device),
            )
        return self._grid_cache[grid]

    def window_at_grid(self, grid: tuple[int, int], device: torch.device) -> FlowWindow:
        """:func:`flow_window` of the flows at a token grid, ``(F, h*w, k*k)`` (cached per update)."""
        key = ("window", grid)
        if key not in self._grid_cache:
            self._grid_cache[key] = flow_window(self.at_grid(grid, device)[0], self.window_size)
        return self._grid_cache[key]


class DualFlowAttnProcessor(AttentionProcessorBase):
    """Dual-flow self-attention for one layer (``name``: its diffusers name); cross-attention passes through."""

    def __init__(self, name: str, context: DualFlowContext) -> None:
        self.name = name
        self.context = context

    def attend(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        call: AttentionCall,
    ) -> torch.Tensor:
        ctx = self.context
        if call.is_cross or call.attention_mask is not None or not ctx.step_active():
            return super().attend(attn, query, key, value, call)
        n = query.shape[2]
        grid = ctx.state.token_grid(n)
        if not ctx.layer_active(ctx.state.downsample_factor(n)):
            return super().attend(attn, query, key, value, call)
        groups = self._num_groups(query.shape[0])
        flows, masks = ctx.at_grid(grid, query.device)
        if ctx.mode == "lockstep":
            kv = self._lockstep_keys(key, value, groups)
        else:
            kv = self._streaming_keys(key, value)
        k_prev, v_prev, prev_valid, k_bank, v_bank, bank_valid = kv
        mask = masks.repeat(groups, 1).to(query.dtype)
        if ctx.prev_reuse == "window":
            window = None if k_prev is None else ctx.window_at_grid(grid, query.device).repeat(groups)
            return window_reuse_attention(
                query,
                key,
                value,
                mask,
                ctx.bias_scale,
                attn.scale,
                k_prev,
                v_prev,
                prev_valid,
                window,
                ctx.distance_bias,
                ctx.window_prior,
                k_bank,
                v_bank,
                bank_valid,
                chunk_size=ctx.chunk_size,
            )
        flow = flows.repeat(groups, 1, 1, 1)
        if ctx.prev_reuse == "blend":
            return blend_reuse_attention(
                query,
                key,
                value,
                mask,
                ctx.bias_scale,
                attn.scale,
                None if v_prev is None else warp_tokens(v_prev, flow, grid),
                prev_valid,
                ctx.blend_weight,
                k_bank,
                v_bank,
                bank_valid,
                chunk_size=ctx.chunk_size,
            )
        if k_prev is not None:
            k_prev, v_prev = warp_tokens(k_prev, flow, grid), warp_tokens(v_prev, flow, grid)
        return dualflow_attention(
            query,
            key,
            value,
            mask,
            ctx.bias_scale,
            attn.scale,
            k_prev,
            v_prev,
            prev_valid,
            k_bank,
            v_bank,
            bank_valid,
            chunk_size=ctx.chunk_size,
        )

    def _num_groups(self, batch: int) -> int:
        frames = self.context.flows.shape[0]
        if batch % frames:
            raise ValueError(
                f"{self.name}: batch {batch} is not a multiple of the {frames} frames of the flows"
            )
        return batch // frames

    def _lockstep_keys(self, key: torch.Tensor, value: torch.Tensor, groups: int):
        ctx = self.context
        frames = ctx.flows.shape[0]
        _, heads, n, d = key.shape
        k5, v5 = key.view(groups, frames, heads, n, d), value.view(groups, frames, heads, n, d)
        prev = (torch.arange(frames, device=key.device) - 1).clamp_min(0)
        k_prev = k5[:, prev].reshape(groups * frames, heads, n, d)
        v_prev = v5[:, prev].reshape(groups * frames, heads, n, d)
        prev_valid = ctx.prev_valid.to(key.device).repeat(groups)
        if frames == 1 and not bool(prev_valid.any()):
            k_prev = v_prev = prev_valid = None
        index = ctx.bank_index
        if index is None or index.shape[1] == 0 or bool((index < 0).all()):
            return k_prev, v_prev, prev_valid, None, None, None
        # slots are filled from the left: drop the columns no frame uses (they would cost compute)
        slots = int((index >= 0).sum(1).max())
        index = index[:, :slots].to(key.device)

        def gather(x5: torch.Tensor) -> torch.Tensor:
            g = x5[:, index.clamp_min(0)]  # (G, F, S, heads, N, d)
            return g.permute(0, 1, 3, 2, 4, 5).reshape(groups * frames, heads, slots * n, d)

        return k_prev, v_prev, prev_valid, gather(k5), gather(v5), (index >= 0).repeat(groups, 1)

    def _streaming_keys(self, key: torch.Tensor, value: torch.Tensor):
        ctx = self.context
        slot = (self.name, ctx.state.step_index)
        if ctx.record is not None:
            ctx.record[slot] = (key.detach(), value.detach())
        prev = (ctx.prev_kv or {}).get(slot)
        k_prev = v_prev = prev_valid = None
        if prev is not None:
            k_prev, v_prev = prev
            prev_valid = ctx.prev_valid.to(key.device).repeat(key.shape[0] // ctx.flows.shape[0])
        bank = [store[slot] for store in ctx.bank_kv if slot in store]
        if not bank:
            return k_prev, v_prev, prev_valid, None, None, None
        k_bank = torch.cat([k for k, _ in bank], dim=2)
        v_bank = torch.cat([v for _, v in bank], dim=2)
        bank_valid = torch.ones(key.shape[0], len(bank), dtype=torch.bool, device=key.device)
        return k_prev, v_prev, prev_valid, k_bank, v_bank, bank_valid


def select_layers(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Self-attention layers (``...attn1``) among ``names`` matching any ``fnmatch`` pattern."""
    return [n for n in names if n.endswith(".attn1") and any(fnmatch.fnmatchcase(n, p) for p in patterns)]
