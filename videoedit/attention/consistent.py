"""Consistent self-attention over sliding tiles of frames (StoryDiffusion, arXiv 2405.01434).

In every self-attention layer it replaces, a frame's queries attend to its own tokens plus tokens
sampled at random from the *other* frames of a tile (StoryDiffusion, Zhou et al. 2024; the official
code is HVision-NKU/StoryDiffusion, ``SpatialAttnProcessor2_0``). What is exactly computed here:

**Tiles.** Within each branch of the batch (``StepState.branches``, e.g. ``[uncond F | cond F]``) the
``F`` frames are cut into tiles of ``T = tile_size`` consecutive frames starting at ``0, S, 2S, ...``
(``S = tile_stride``) plus, when the last one does not reach the end, one tile ending at the last frame
(``start = F - T``); see :func:`tile_starts`. With ``F <= T`` there is one tile of ``F`` frames. Tiles
are processed one at a time, so the extra memory of the attention is bounded by ``T`` and does not grow
with the clip: no ``F*N x F*N`` matrix is ever formed.

**Sampling.** For each tile, every frame ``j`` of the tile draws a subset ``P_j`` of its ``N`` tokens,
each token kept independently with probability ``sampling_rate`` (a Bernoulli draw, as the official
memory-efficient variant ``cal_attn_indice_xl_effcient_memory``). The same ``P_j`` serve every query
frame of the tile and every branch (official: the indices are shared by the CFG halves).

**Attention.** Query frame ``i`` of the tile attends (SDPA, the layer's scale) to
``K_i = [k_i ; k_j[P_j] for j in tile, j != i]`` and the matching values. ``sampling_rate = 0`` gives
``K_i = k_i`` (``AttnProcessor2_0``); ``sampling_rate = 1`` with one tile gives every frame the keys
of all tile frames (extended attention over the tile).

**Overlaps.** A frame in several tiles gets the plain mean of its outputs from those tiles (the
output projection is affine, so averaging before or after it is the same).

**Randomness.** Draws come from a fresh ``torch.Generator`` seeded by a hash of ``(seed, layer name,
phase, step_index, tile start)``, where ``seed`` is given when the processors are built (the edit's
seed): results are reproducible, independent of the order of calls, and the global RNG is untouched.

Deliberate differences from the official code (which generates images, not edits): the official
processor uses plain attention at the first step and, later, skips consistent attention at random in
30% (steps < 20) or 10% of the calls with Python's global ``random``; here ``start_step`` covers the
first (official value 1, default 0) and there is no random skipping (it would not be reproducible).

Combinations (the :class:`ConsistentSelfAttention` spec is accepted as ``self_attention`` by methods):

* ``method=ddim`` (``configs/method/consistent_ddim.yaml``): installed on the selected ``attn1`` layers
  during editing, and during inversion too with ``during_inversion: true`` (then part of the
  inversion cache key);
* VideoGrain (once its method takes ``self_attention`` the same way): its cross-attention modulation
  (``attn2``) combines with this processor, which then replaces its self-attention modulation on
  ``attn1``; merge the two with :meth:`ConsistentSelfAttention.factory` first (it returns ``None`` for
  every other layer). The two self-attention changes do not compose (one processor per layer);
* ``method=keyframe_propagate`` with a consistent ``keyframe_method``: the keyframes are edited jointly
  with consistent attention between them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from videoedit.attention.base import AttentionCall, AttentionProcessorBase
from videoedit.attention.install import attention_layer_names
from videoedit.attention.state import StepState
from videoedit.errors import ConfigError

BLOCKS = ("down", "mid", "up")
_BLOCK_PREFIX = {"down": "down_blocks.", "mid": "mid_block.", "up": "up_blocks."}


def tile_starts(num_frames: int, tile_size: int, tile_stride: int) -> list[int]:
    """First frame of each tile: ``0, S, 2S, ...`` while a whole tile fits, then ``F - T`` if needed.

    Every frame is in at least one tile; every tile has ``min(T, F)`` frames.
    """
    if num_frames <= tile_size:
        return [0]
    starts = list(range(0, num_frames - tile_size + 1, tile_stride))
    if starts[-1] + tile_size < num_frames:
        starts.append(num_frames - tile_size)
    return starts


def tile_seed(seed: int, layer: str, phase: str, step_index: int, tile_start: int) -> int:
    """A 63-bit seed from everything that identifies one tile's draw (not from the order of calls)."""
    text = f"{int(seed)}|{layer}|{phase}|{int(step_index)}|{int(tile_start)}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def sample_token_indices(
    num_frames: int, num_tokens: int, sampling_rate: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """Per frame of a tile, the indices of its tokens shared with the other frames (Bernoulli draws).

    Returns:
        ``num_frames`` ascending ``int64`` tensors of token indices in ``[0, num_tokens)``.
    """
    keep = torch.rand((num_frames, num_tokens), generator=generator) < sampling_rate
    return [torch.nonzero(row, as_tuple=True)[0] for row in keep]


class ConsistentSelfAttnProcessor(AttentionProcessorBase):
    """Consistent self-attention on one ``attn1`` layer (see the module docstring for the formula).

    Args:
        state: the pipeline's :class:`StepState` (``num_frames``, ``branches``, ``phase``, ``step_index``).
        layer: the layer's name (part of the random seed).
        sampling_rate: probability that a token of another frame is shared (official default 0.5).
        tile_size: frames per tile ``T``.
        tile_stride: first-frame distance between tiles ``S`` (``<= T``; ``< T`` overlaps).
        seed: base seed of the draws (the edit's seed).
        start_step: steps before it use per-frame attention (official StoryDiffusion: 1).
    """

    def __init__(
        self,
        state: StepState,
        layer: str,
        sampling_rate: float = 0.5,
        tile_size: int = 8,
        tile_stride: int = 4,
        seed: int = 0,
        start_step: int = 0,
    ) -> None:
        _check_settings(sampling_rate, tile_size, tile_stride, start_step)
        self.state = state
        self.layer = layer
        self.sampling_rate = float(sampling_rate)
        self.tile_size = int(tile_size)
        self.tile_stride = int(tile_stride)
        self.seed = int(seed)
        self.start_step = int(start_step)

    def _sdpa(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """One tile frame's attention ``(nb, heads, N, d) x (nb, heads, M, d)`` (a seam for tests)."""
        return F.scaled_dot_product_attention(query, key, value, scale=scale)

    def attend(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        call: AttentionCall,
    ) -> torch.Tensor:
        """``(B, heads, N, d)`` tensors with ``B = len(branches) * F``, branch-major."""
        if call.is_cross:
            return super().attend(attn, query, key, value, call)
        if call.attention_mask is not None:
            raise ValueError("ConsistentSelfAttnProcessor does not support attention masks on attn1")
        state = self.state
        num_frames = state.num_frames
        batch, num_tokens = query.shape[0], query.shape[2]
        if num_frames < 1 or batch % num_frames or batch // num_frames != len(state.branches):
            raise ValueError(
                f"{self.layer}: batch {batch} is not len(branches) x num_frames = {len(state.branches)} x "
                f"{num_frames}; the pipeline must update the StepState before every UNet call"
            )
        if state.step_index < self.start_step:
            return super().attend(attn, query, key, value, call)
        nb = batch // num_frames
        q = query.unflatten(0, (nb, num_frames))  # (nb, F, heads, N, d)
        k = key.unflatten(0, (nb, num_frames))
        v = value.unflatten(0, (nb, num_frames))
        out = torch.zeros_like(q)
        counts = torch.zeros(num_frames, dtype=q.dtype, device=q.device)
        for start in tile_starts(num_frames, self.tile_size, self.tile_stride):
            stop = min(start + self.tile_size, num_frames)
            generator = torch.Generator(device="cpu").manual_seed(
                tile_seed(self.seed, self.layer, state.phase, state.step_index, start)
            )
            picks = sample_token_indices(stop - start, num_tokens, self.sampling_rate, generator)
            shared_k = [k[:, j][:, :, picks[j - start].to(k.device)] for j in range(start, stop)]
            shared_v = [v[:, j][:, :, picks[j - start].to(v.device)] for j in range(start, stop)]
            for i in range(start, stop):
                others = [j - start for j in range(start, stop) if j != i]
                keys = torch.cat([k[:, i], *(shared_k[o] for o in others)], dim=2)
                values = torch.cat([v[:, i], *(shared_v[o] for o in others)], dim=2)
                out[:, i] += self._sdpa(q[:, i], keys, values, attn.scale)
            counts[start:stop] += 1
        out = out / counts.view(1, num_frames, 1, 1, 1)
        return out.flatten(0, 1)


def _check_settings(sampling_rate: float, tile_size: int, tile_stride: int, start_step: int) -> None:
    if not 0.0 <= float(sampling_rate) <= 1.0:
        raise ConfigError(f"self_attention.sampling_rate must be in [0, 1], got {sampling_rate}.")
    if int(tile_size) < 1:
        raise ConfigError(f"self_attention.tile_size must be >= 1, got {tile_size}.")
    if not 1 <= int(tile_stride) <= int(tile_size):
        raise ConfigError(
            f"self_attention.tile_stride must be between 1 and tile_size ({tile_size}), got {tile_stride}: "
            "a larger stride would leave frames outside every tile."
        )
    if int(start_step) < 0:
        raise ConfigError(f"self_attention.start_step must be >= 0, got {start_step}.")


class ConsistentSelfAttention:
    """The config-side description of consistent self-attention (``self_attention:`` of a method).

    Methods call :meth:`processors` to get one :class:`ConsistentSelfAttnProcessor` per selected
    ``attn1`` layer and install them with :func:`videoedit.attention.attention_processors`.

    Args:
        sampling_rate: probability that a token of another frame joins a frame's keys (official 0.5).
        tile_size: frames per tile.
        tile_stride: distance between tile starts; ``None`` = ``max(1, tile_size // 2)`` (half overlap).
        blocks: UNet parts whose ``attn1`` layers get it, among ``down``, ``mid``, ``up``
            (official StoryDiffusion: ``up`` only).
        start_step: editing steps before it use per-frame attention (official: 1).
        during_inversion: also use it while inverting the source (changes the cached inversion; the
            inversion draws with seed 0, as it is shared by every edit).
    """

    def __init__(
        self,
        sampling_rate: float = 0.5,
        tile_size: int = 8,
        tile_stride: int | None = None,
        blocks: Sequence[str] = ("up",),
        start_step: int = 0,
        during_inversion: bool = False,
    ) -> None:
        stride = max(1, int(tile_size) // 2) if tile_stride is None else int(tile_stride)
        _check_settings(sampling_rate, tile_size, stride, start_step)
        blocks = [blocks] if isinstance(blocks, str) else list(blocks)
        unknown = sorted(set(blocks) - set(BLOCKS))
        if unknown or not blocks:
            raise ConfigError(
                f"self_attention.blocks must be a non-empty list of {list(BLOCKS)}, got {blocks}."
            )
        self.sampling_rate = float(sampling_rate)
        self.tile_size = int(tile_size)
        self.tile_stride = stride
        self.blocks = tuple(b for b in BLOCKS if b in blocks)
        self.start_step = int(start_step)
        self.during_inversion = bool(during_inversion)

    def layer_names(self, unet: torch.nn.Module) -> list[str]:
        """The ``attn1`` layers of the selected blocks."""
        prefixes = tuple(_BLOCK_PREFIX[b] for b in self.blocks)
        return [n for n in attention_layer_names(unet, "attn1") if n.startswith(prefixes)]

    def processors(
        self, unet: torch.nn.Module, state: StepState, seed: int
    ) -> dict[str, ConsistentSelfAttnProcessor]:
        """``{layer: processor}`` for :func:`~videoedit.attention.attention_processors`."""
        make = self.factory(state, seed)
        return {name: make(name) for name in self.layer_names(unet)}

    def factory(self, state: StepState, seed: int) -> Callable[[str], ConsistentSelfAttnProcessor | None]:
        """The same as a ``layer name -> processor or None`` function (for methods that merge factories)."""
        prefixes = tuple(_BLOCK_PREFIX[b] for b in self.blocks)

        def make(name: str) -> ConsistentSelfAttnProcessor | None:
            if not (name.endswith(".attn1") and name.startswith(prefixes)):
                return None
            return ConsistentSelfAttnProcessor(
                state,
                name,
                self.sampling_rate,
                self.tile_size,
                self.tile_stride,
                seed=seed,
                start_step=self.start_step,
            )

        return make

    def settings(self) -> dict[str, Any]:
        """Everything that changes the result (for ``metrics.json`` and inversion cache keys)."""
        return {
            "name": "consistent",
            "sampling_rate": self.sampling_rate,
            "tile_size": self.tile_size,
            "tile_stride": self.tile_stride,
            "blocks": list(self.blocks),
            "start_step": self.start_step,
            "during_inversion": self.during_inversion,
        }

    def __repr__(self) -> str:
        return f"ConsistentSelfAttention({self.settings()})"
