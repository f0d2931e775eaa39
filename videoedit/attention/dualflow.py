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

The attention is one ``F.scaled_dot_product_attention`` call with an additive float mask per chunk of
frames (``chunk_size`` bounds the ``(chunk, 1, N, keys)`` mask's memory), never a loop over heads.
"""

from __future__ import annotations

import fnmatch
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
    flows: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    prev_valid: torch.Tensor | None = None
    bank_index: torch.Tensor | None = None
    prev_kv: KVStore | None = None
    bank_kv: list[KVStore] = field(default_factory=list)
    record: KVStore | None = None
    _grid_cache: dict = field(default_factory=dict, repr=False)

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
        if k_prev is not None:
            flow = flows.repeat(groups, 1, 1, 1)
            k_prev, v_prev = warp_tokens(k_prev, flow, grid), warp_tokens(v_prev, flow, grid)
        return dualflow_attention(
            query,
            key,
            value,
            masks.repeat(groups, 1).to(query.dtype),
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
