"""Region masks at every UNet resolution, as VideoGrain's ``_prepare_attention_layout`` builds them.

For a layer with a ``h x w`` token grid and masks ``L[s, f, p]`` (region ``s``, frame ``f``, token ``p``):

* **self-attention pairs**: query ``(f, p)`` and key ``(f', p')`` are a positive pair when some region
  holds both (``sum_s L[s,f,p] L[s,f',p'] > 0``; overlaps are counted as the official code does). We keep
  the per-token region membership and build pair masks per query chunk; the ``(F*hw)^2`` matrix the
  official code stores is never materialised.
* **self size factor** (``reg_sizes``): ``1 - sum_k pairs(q, k) / (F^2 * hw)``
  = ``1 - sum_s L[s,q] * area_s / (F^2 * hw)`` with ``area_s`` the region's token count over all frames.
* **cross-attention ownership** (``creg_maps``): token ``k`` of the prompt is positive for pixel
  ``(f, p)`` when the region owning ``k`` covers ``(f, p)``.
* **cross size factor** (``reg_sizes_c``): ``1 - sum_s L[s,f,p] * area_{s,f} / hw``, per frame.

Masks reach each resolution by nearest downsampling from latent resolution (official). ``max`` (a
token belongs to every region touching its cell) and ``area`` (coverage fraction >= ``area_threshold``)
let thin parts (eyes, sunglasses) survive at 16x16 and 8x8.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from videoedit.errors import ConfigError

DownsampleMode = Literal["nearest", "max", "area"]


def downsample_regions(
    masks: torch.Tensor, size: tuple[int, int], mode: DownsampleMode = "nearest", area_threshold: float = 0.25
) -> torch.Tensor:
    """``(F, R, H, W)`` bool masks -> ``(F, R, h, w)`` bool at ``size``."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.bool()
    x = masks.float()
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest") > 0.5
    if mode == "max":
        return F.adaptive_max_pool2d(x, size) > 0.5
    if mode == "area":
        return F.adaptive_avg_pool2d(x, size) >= area_threshold
    raise ConfigError(f"mask_downsample must be nearest, max or area, got {mode!r}")


@dataclass
class LayerLayout:
    """Regions at one token grid.

    Attributes:
        grid: ``(h, w)`` tokens per frame.
        member: ``(F, N, R)`` bool, region membership of each token (``N = h*w``).
        cross_mask: ``(F, N, L)`` bool, cross-attention positives (``L`` prompt tokens, 77 for CLIP).
        cross_size: ``(F, N)`` float, the per-frame size factor ``reg_sizes_c``.
    """

    grid: tuple[int, int]
    member: torch.Tensor
    cross_mask: torch.Tensor
    cross_size: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.member.shape[0]

    @property
    def tokens_per_frame(self) -> int:
        return self.member.shape[1]

    def flat_member(self) -> torch.Tensor:
        """``(F*N, R)`` float membership in the full-frame token order (frame-major), computed once."""
        if getattr(self, "_flat", None) is None:
            self._flat = self.member.reshape(-1, self.member.shape[-1]).float()
        return self._flat

    def to(self, device: torch.device | str) -> LayerLayout:
        """A copy on ``device`` (done once per edit, not per attention call)."""
        return LayerLayout(
            self.grid, self.member.to(device), self.cross_mask.to(device), self.cross_size.to(device)
        )

    def self_size(
        self, query_member: torch.Tensor, key_member: torch.Tensor, num_key_frames: int
    ) -> torch.Tensor:
        """``reg_sizes`` of queries ``(Q, R)`` attending to keys ``(K, R)`` spanning ``num_key_frames`` frames.

        With all frames as keys this is the official ``1 - rowsum(sreg) / (F^2 * hw)``; a window of ``n``
        frames uses ``n`` in place of ``F``.
        """
        counts = query_member @ key_member.sum(0)  # (Q,) = sum_k pairs(q, k)
        return 1.0 - counts / (num_key_frames**2 * self.tokens_per_frame)


def build_layer_layouts(
    masks: torch.Tensor,
    latent_size: tuple[int, int],
    token_region: torch.Tensor,
    factors: Iterable[int] = (1, 2, 4, 8),
    mode: DownsampleMode = "nearest",
    area_threshold: float = 0.25,
) -> dict[int, LayerLayout]:
    """Per-resolution layouts, keyed by the downsample factor relative to the latent grid.

    Args:
        masks: ``(F, R, H, W)`` bool region masks at pixel resolution.
        latent_size: ``(h, w)`` of the latents (factor 1).
        token_region: ``(L,)`` long, the region owning each prompt token (``-1`` for none; L = 77 for CLIP).
        factors: downsample factors to prepare (1, 2, 4, 8 = SD's four UNet levels).
    """
    if masks.shape[1] == 0:
        raise ConfigError("VideoGrain needs at least one region mask")
    h0, w0 = latent_size
    # official: masks first reach latent resolution (nearest), then each level downsamples from there
    latent = downsample_regions(masks, (h0, w0), "nearest") if mode == "nearest" else None
    layouts = {}
    for factor in sorted(set(factors)):
        size = (h0 // factor, w0 // factor)
        if mode == "nearest":
            level = downsample_regions(latent, size, "nearest")
        else:  # pool from pixel resolution so coverage fractions are exact
            level = downsample_regions(masks, size, mode, area_threshold)
        layouts[factor] = layout_from_token_masks(level, token_region)
    return layouts


def layout_from_token_masks(level: torch.Tensor, token_region: torch.Tensor) -> LayerLayout:
    """The :class:`LayerLayout` of region masks already on a token grid.

    Args:
        level: ``(F, R, h, w)`` bool region membership of every token of every frame.
        token_region: ``(L,)`` long, the region owning each prompt token (``-1`` for none).
    """
    owner = token_region.clamp_min(0)
    owned = (token_region >= 0).view(1, 1, -1)
    member = level.flatten(2).transpose(1, 2)  # (F, N, R)
    n = member.shape[1]
    cross_mask = member[:, :, owner] & owned  # (F, N, L)
    frame_area = member.float().sum(1)  # (F, R)
    cross_size = 1.0 - torch.einsum("fnr,fr->fn", member.float(), frame_area) / n
    return LayerLayout(
        grid=tuple(level.shape[-2:]), member=member, cross_mask=cross_mask, cross_size=cross_size
    )
