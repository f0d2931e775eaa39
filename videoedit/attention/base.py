"""A template for attention processors: diffusers' ``AttnProcessor2_0`` plumbing around one method.

Every method processor needs the same prologue (spatial/group norms, projections, head split) and
epilogue (head merge, output projection, residual, rescale). :class:`AttentionProcessorBase` does those
exactly as ``AttnProcessor2_0`` and leaves two methods to override:

* :meth:`~AttentionProcessorBase.adjust_qkv` to replace or record projections (PnP injection);
* :meth:`~AttentionProcessorBase.attend` to compute the attention itself (``(B, heads, N, d)`` tensors).

With neither overridden, the output equals ``AttnProcessor2_0``'s (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


@dataclass
class AttentionCall:
    """What a processor knows about the current call.

    Attributes:
        hidden_states: ``(B, N, C)`` query-side tokens after the layer's own norms (for self-attention
            in a transformer block this is ``norm1``'s output, the token TokenFlow matches on).
        is_cross: whether keys/values come from ``encoder_hidden_states``.
        attention_mask: the prepared additive mask ``(B, heads, N, M)`` or ``None``.
    """

    hidden_states: torch.Tensor
    is_cross: bool
    attention_mask: torch.Tensor | None = None


class AttentionProcessorBase:
    """Subclass and override :meth:`attend` and/or :meth:`adjust_qkv`."""

    def adjust_qkv(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        call: AttentionCall,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hook on the projections ``(B, heads, N|M, d)``; identity by default."""
        return query, key, value

    def attend(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        call: AttentionCall,
    ) -> torch.Tensor:
        """Attention ``(B, heads, N, d) x (B, heads, M, d) -> (B, heads, N, d)``; SDPA by default."""
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=call.attention_mask, scale=attn.scale
        )

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, key_len, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        is_cross = encoder_hidden_states is not None
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        call = AttentionCall(hidden_states=hidden_states, is_cross=is_cross, attention_mask=attention_mask)
        query, key, value = self.adjust_qkv(attn, query, key, value, call)
        out = self.attend(attn, query, key, value, call)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def split_branches(x: torch.Tensor, num_branches: int) -> torch.Tensor:
    """``(n*F, ...) -> (n, F, ...)`` (the batch is branch-major)."""
    return x.reshape(num_branches, x.shape[0] // num_branches, *x.shape[1:])


def frames_to_sequence(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(G*F, heads, N, d) -> (G, heads, F*N, d)``: every frame's tokens in one sequence per group."""
    gf, heads, n, d = x.shape
    g = gf // num_frames
    return x.reshape(g, num_frames, heads, n, d).permute(0, 2, 1, 3, 4).reshape(g, heads, num_frames * n, d)


def sequence_to_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Inverse of :func:`frames_to_sequence`: ``(G, heads, F*N, d) -> (G*F, heads, N, d)``."""
    g, heads, fn, d = x.shape
    n = fn // num_frames
    return x.reshape(g, heads, num_frames, n, d).permute(0, 2, 1, 3, 4).reshape(g * num_frames, heads, n, d)
