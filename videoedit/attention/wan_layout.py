"""Region-aware (layout) attention on Wan 2.1's DiT: VideoGrain's space-time layout modulation carried from
the UNet's frame-wise layers to a transformer whose self-attention spans every token of the video.

Processors subclass diffusers' ``WanAttnProcessor`` and are installed with ``set_attn_processor`` on
``blocks.<i>.attn1`` (self) and ``blocks.<i>.attn2`` (cross). With the modulation off (outside its window, on
a branch it does not act on, or with zero weights) they call ``WanAttnProcessor`` itself, so the model is
untouched. When on, on the scaled logits ``s`` of each query row (see :mod:`videoedit.attention.st_layout`)::

    s += M * w * treg * size * (rowmax - s);   s -= (1 - M) * w * treg * size * (s - rowmin)

* **self-attention** (``w = sreg``): ``M(q, k) = 1`` when a region holds both tokens (any latent frames);
  ``size = 1 - sum_k M(q, k) / (F'^2 hw)``, VideoGrain's ``reg_sizes``. Queries run in chunks holding all
  their keys: the ``N x N`` pair mask is never built, peak memory is set by ``chunk_budget_mb``.
* **cross-attention** (``w = creg``): ``M(q, j) = 1`` when prompt token ``j`` lies in the span of the local
  prompt of a region holding ``q``; ``size`` is the per-frame ``1 - area/hw`` of VideoGrain. Wan pads its prompt
  embeddings with zeros to 512 tokens and was trained attending to them: only the prompt's own tokens are
  modulated (row max/min over them), the padding columns keep their logits.
* ``treg = ((t - treg_offset) / 1000) ** treg_power`` with ``t = 1000 sigma``, active during the first
  ``fraction`` of the *executed* steps (FlowEdit skips the first ``T - n_max`` steps of its schedule, where a
  window over the schedule, as VideoGrain's first 15 of 50, would never act).
* Only the velocity calls of the target prompt are modulated (``state.branches`` is ``target_cond`` /
  ``target_uncond``; ``self_branch`` / ``cross_branch`` choose which): the source velocity stays the model's.

Adapted from VideoGrain (Yang et al., ICLR 2025) and DenseDiffusion (Kim et al., ICCV 2023); code is ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from videoedit.attention.st_layout import SelfModulation, chunk_rows, full_frame_attention, modulate_logits
from videoedit.attention.state import StepState
from videoedit.errors import ConfigError
from videoedit.layout.regions import LayerLayout

_BRANCHES = {"cond": ("cond",), "uncond": ("uncond",), "both": ("cond", "uncond"), "none": ()}


@dataclass
class DiTLayoutSettings:
    """``method.layout``: region-aware attention on the DiT (see the module docstring).

    Attributes:
        sreg, creg: self- and cross-attention weights (VideoGrain: 0.3, 1.0).
        treg_power, treg_offset: ``treg = ((t - offset)/1000) ** power`` (VideoGrain: 5, 1).
        fraction: modulate the first ``ceil(fraction * executed steps)`` steps (VideoGrain: 0.3).
        self_branch, cross_branch: target velocity branches modulated: ``cond``, ``uncond``, ``both`` or
            ``none`` (VideoGrain's UNet code modulates self-attention on its unconditional branch, a quirk of
            its sliced heads; here both default to the conditional branch, DenseDiffusion's semantics).
        temporal, threshold: the latent-frame rule of :mod:`videoedit.layout.video_tokens`.
        chunk_budget_mb: memory for one query chunk's scores.
        blend: keep latents outside the union of the regions equal to the source (latent blending).
    """

    sreg: float = 0.3
    creg: float = 1.0
    treg_power: float = 5.0
    treg_offset: float = 1.0
    fraction: float = 0.3
    self_branch: str = "cond"
    cross_branch: str = "cond"
    temporal: str = "mean"
    threshold: float = 0.5
    chunk_budget_mb: float = 256.0
    blend: bool = True

    def __post_init__(self) -> None:
        for key in ("self_branch", "cross_branch"):
            if getattr(self, key) not in _BRANCHES:
                raise ConfigError(
                    f"method.layout.{key} must be one of {sorted(_BRANCHES)}, got {getattr(self, key)!r}"
                )
        if not 0 <= self.fraction <= 1:
            raise ConfigError(f"method.layout.fraction must be in [0, 1], got {self.fraction}")
        if self.temporal not in ("mean", "any"):
            raise ConfigError(f"method.layout.temporal must be mean or any, got {self.temporal!r}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"method.layout.threshold must be in (0, 1], got {self.threshold}")
        if self.chunk_budget_mb <= 0:
            raise ConfigError(f"method.layout.chunk_budget_mb must be > 0, got {self.chunk_budget_mb}")

    @classmethod
    def build(cls, value: DiTLayoutSettings | Mapping | None) -> DiTLayoutSettings | None:
        if value is None or isinstance(value, cls):
            return value
        try:
            return cls(**dict(value))
        except TypeError as err:
            raise ConfigError(f"Bad method.layout settings {dict(value)}: {err}") from err

    def modulated_steps(self, executed_steps: int) -> int:
        return math.ceil(self.fraction * executed_steps - 1e-9)

    def treg(self, timestep: float) -> float:
        return max(0.0, (float(timestep) - self.treg_offset) / 1000.0) ** self.treg_power


class WanLayoutController:
    """Shared by every layout processor of one edit: the token layout, the settings and the step state.

    Args:
        state: written by the pipeline before every transformer call (step, timestep, branch).
        layout: regions on the token grid, ``F'`` latent frames of ``N = h' w'`` tokens; its ``cross_mask``
            spans the padded prompt ``(F', N, L)``.
        settings: :class:`DiTLayoutSettings`.
        prompt_length: tokens of the target prompt itself (the modulated cross-attention columns).
        executed_steps: the steps the pipeline runs (the window is ``fraction`` of them).
    """

    def __init__(
        self,
        state: StepState,
        layout: LayerLayout,
        settings: DiTLayoutSettings,
        prompt_length: int,
        executed_steps: int,
    ) -> None:
        self.state = state
        self.layout = layout
        self.settings = settings
        self.prompt_length = int(prompt_length)
        self.window = settings.modulated_steps(executed_steps)
        self.member = layout.flat_member()
        self.cross_mask = layout.cross_mask.reshape(-1, layout.cross_mask.shape[-1])[:, : self.prompt_length]
        self.cross_size = layout.cross_size.reshape(-1)

    def weight(self, kind: str) -> float:
        """``w * treg`` for ``kind`` (``"self"``/``"cross"``) in the current call, 0 when off."""
        s = self.state
        if s.phase != "sample" or s.step_index >= self.window or len(s.branches) != 1:
            return 0.0
        branch = s.branches[0]
        if not branch.startswith("target_"):
            return 0.0
        which = self.settings.self_branch if kind == "self" else self.settings.cross_branch
        if branch[len("target_") :] not in _BRANCHES[which]:
            return 0.0
        w = self.settings.sreg if kind == "self" else self.settings.creg
        return w * self.settings.treg(s.timestep)

    @property
    def chunk_budget_bytes(self) -> int:
        return int(self.settings.chunk_budget_mb * 2**20)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on ``(B, N, heads, d)``: pairs ``(x_2i, x_2i+1)`` rotated by the token's angles."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


def wan_projections(
    attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, rotary_emb=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k, v`` ``(B, N|L, heads, d)`` exactly as ``WanAttnProcessor`` prepares them (norms, rotary)."""
    if attn.add_k_proj is not None:
        raise ConfigError(
            "Layout attention supports Wan's text-to-video transformer only (this one has image keys: I2V)."
        )
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if getattr(attn, "fused_projections", False):
        if encoder_hidden_states is None:
            q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            q = attn.to_q(hidden_states)
            k, v = attn.to_kv(context).chunk(2, dim=-1)
    else:
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
    q, k = attn.norm_q(q), attn.norm_k(k)
    q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))
    if rotary_emb is not None:
        q, k = _rotary(q, *rotary_emb), _rotary(k, *rotary_emb)
    return q, k, v


def modulated_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positive: torch.Tensor,
    strength: torch.Tensor,
    prompt_length: int,
    chunk_budget_bytes: int,
) -> torch.Tensor:
    """Cross-attention with the layout modulation on the prompt's own tokens, in query chunks.

    Args:
        q: ``(heads, N, d)``; k, v: ``(heads, L, d)``.
        positive: ``(N, prompt_length)`` bool ``M``.
        strength: ``(N,)`` ``g = w * treg * size``.
        prompt_length: modulated columns ``[:prompt_length]``; the rest (padding) keep their logits.

    Returns:
        ``(heads, N, d)``.
    """
    heads, n, d = q.shape
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    kt = k.transpose(-1, -2).to(compute)
    vc = v.to(compute)
    out = torch.empty(heads, n, v.shape[-1], dtype=q.dtype, device=q.device)
    rows = chunk_rows(heads, k.shape[1], torch.finfo(compute).bits // 8, chunk_budget_bytes)
    scale = d**-0.5
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        logits = torch.matmul(q[:, start:stop].to(compute) * scale, kt)  # (heads, c, L)
        if prompt_length > 0:
            modulate_logits(logits[..., :prompt_length], positive[start:stop], strength[start:stop])
        out[:, start:stop] = torch.matmul(logits.softmax(-1), vc).to(q.dtype)
        del logits
    return out


class WanLayoutSelfAttnProcessor(WanAttnProcessor):
    """Layout-modulated self-attention over every video token (``attn1``); ``WanAttnProcessor`` when off."""

    def __init__(self, controller: WanLayoutController) -> None:
        super().__init__()
        self.controller = controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        c = self.controller
        weight = c.weight("self")
        if weight == 0 or encoder_hidden_states is not None or attention_mask is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        q, k, v = wan_projections(attn, hidden_states, None, rotary_emb)
        mod = SelfModulation(member=c.member.to(q.device), size_fn=c.layout.self_size, weight=weight)
        out = torch.stack(
            [
                full_frame_attention(
                    q[b].transpose(0, 1),
                    k[b].transpose(0, 1),
                    v[b].transpose(0, 1),
                    c.layout.num_frames,
                    q.shape[-1] ** -0.5,
                    modulation=mod,
                    chunk_budget_bytes=c.chunk_budget_bytes,
                ).transpose(0, 1)
                for b in range(q.shape[0])
            ]
        )
        out = out.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


class WanLayoutCrossAttnProcessor(WanAttnProcessor):
    """Layout-modulated cross-attention to the prompt (``attn2``); ``WanAttnProcessor`` when off."""

    def __init__(self, controller: WanLayoutController) -> None:
        super().__init__()
        self.controller = controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        c = self.controller
        weight = c.weight("cross")
        if weight == 0 or encoder_hidden_states is None or attention_mask is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        q, k, v = wan_projections(attn, hidden_states, encoder_hidden_states, None)
        positive = c.cross_mask.to(q.device)
        strength = (c.cross_size * weight).to(q.device)
        out = torch.stack(
            [
                modulated_cross_attention(
                    q[b].transpose(0, 1),
                    k[b].transpose(0, 1),
                    v[b].transpose(0, 1),
                    positive,
                    strength,
                    c.prompt_length,
                    c.chunk_budget_bytes,
                ).transpose(0, 1)
                for b in range(q.shape[0])
            ]
        )
        out = out.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


def wan_layout_processors(
    transformer: torch.nn.Module, controller: WanLayoutController
) -> dict[str, WanAttnProcessor]:
    """``{layer: processor}`` for every ``attn1``/``attn2`` of the transformer's ``blocks`` (one controller
    shared). Wan VACE's ``vace_blocks`` (its control branch) keep their own attention: the control hint they add
    is computed as the model was trained."""
    out: dict[str, WanAttnProcessor] = {}
    for name in transformer.attn_processors:
        layer = name[: -len(".processor")]
        if not layer.startswith("blocks."):
            continue
        if layer.endswith(".attn1"):
            out[layer] = WanLayoutSelfAttnProcessor(controller)
        elif layer.endswith(".attn2"):
            out[layer] = WanLayoutCrossAttnProcessor(controller)
    return out


def reference_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positive: torch.Tensor,
    strength: torch.Tensor,
    prompt_length: int,
) -> torch.Tensor:
    """The straightforward full-matrix formula of :func:`modulated_cross_attention` (tests only), in float64."""
    logits = torch.einsum("hnd,hld->hnl", q.double(), k.double()) * q.shape[-1] ** -0.5
    head = logits[..., :prompt_length]
    hi, lo = head.amax(-1, keepdim=True), head.amin(-1, keepdim=True)
    g = strength.double()[None, :, None]
    m = positive.double()[None]
    head = head + m * g * (hi - head)
    head = head - (1 - m) * g * (head - lo)
    logits = torch.cat([head, logits[..., prompt_length:]], dim=-1)
    return torch.einsum("hnl,hld->hnd", F.softmax(logits, -1), v.double()).to(q.dtype)
