"""Region masks on a video DiT's latent frames and token grid (Wan 2.1: time x4, space x8, patch 2x2).

A causal video VAE keeps the first frame on its own and compresses the rest in groups: with a temporal factor
``T`` (4 for Wan), latent frame 0 holds source frame 0 and latent frame ``j >= 1`` holds source frames
``T(j-1)+1 .. Tj``. A latent frame therefore covers up to ``T`` source frames, and a region can move inside it.
The rule used here (documented in the README and ``configs/method/flowedit_layout.yaml``):

* **coverage**: for each latent frame, average the region's binary masks over the source frames it holds
  (``temporal="mean"``), or take their union (``temporal="any"``);
* **tokens**: average that coverage over each token's footprint (``8 x patch`` = 16x16 pixels for Wan);
  a token belongs to the region when the result is at least ``threshold`` (0.5: the region covers most of the
  token over the frames it stands for). ``temporal="any"`` with a small threshold keeps thin or fast parts at
  the price of fatter masks;
* **latent blending** uses the same rule at latent resolution (8x8 pixels per latent cell).

Regions may overlap; a token outside every region belongs to none (it is kept from the source by blending).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from videoedit.errors import ConfigError

TemporalRule = Literal["mean", "any"]


def latent_frame_groups(num_frames: int, temporal_factor: int) -> list[list[int]]:
    """The source frames each latent frame holds: ``[[0], [1..T], [T+1..2T], ...]`` for ``num_frames = kT+1``."""
    if temporal_factor < 1 or (num_frames - 1) % temporal_factor:
        raise ValueError(
            f"{num_frames} frames do not fit a causal VAE with temporal factor {temporal_factor}"
        )
    groups = [[0]]
    for start in range(1, num_frames, temporal_factor):
        groups.append(list(range(start, start + temporal_factor)))
    return groups


def latent_frame_coverage(
    masks: torch.Tensor, temporal_factor: int, temporal: TemporalRule = "mean"
) -> torch.Tensor:
    """``(F, R, H, W)`` bool masks -> ``(F', R, H, W)`` float coverage in [0, 1] per latent frame."""
    groups = latent_frame_groups(masks.shape[0], temporal_factor)
    x = masks.float()
    if temporal == "mean":
        return torch.stack([x[g].mean(0) for g in groups])
    if temporal == "any":
        return torch.stack([x[g].amax(0) for g in groups])
    raise ConfigError(f"layout.temporal must be 'mean' or 'any', got {temporal!r}")


def pool_coverage(coverage: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """``(F', R, H, W)`` coverage -> ``(F', R, h, w)`` bool: mean over each cell of ``H/h x W/w`` pixels
    is at least ``threshold``."""
    h, w = size
    if coverage.shape[-2] % h or coverage.shape[-1] % w:
        raise ValueError(f"frames {tuple(coverage.shape[-2:])} are not a multiple of the grid {size}")
    if not 0 < threshold <= 1:
        raise ConfigError(f"layout.threshold must be in (0, 1], got {threshold}")
    pooled = F.adaptive_avg_pool2d(coverage, (h, w))
    return pooled >= threshold - 1e-6


def token_masks(
    masks: torch.Tensor,
    temporal_factor: int,
    grid: tuple[int, int],
    temporal: TemporalRule = "mean",
    threshold: float = 0.5,
) -> torch.Tensor:
    """Region membership of every token: ``(F, R, H, W)`` bool pixel masks -> ``(F', R, h', w')`` bool on the
    transformer's token grid ``grid = (h', w')`` (see the module docstring for the rule)."""
    return pool_coverage(latent_frame_coverage(masks, temporal_factor, temporal), grid, threshold)
