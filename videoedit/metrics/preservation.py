"""Preservation outside the edited regions: PSNR and SSIM between source and output, masked.

Which regions count as **edited**:

* when the edit has local prompts (``[full, local_1, ..., local_n]``, local prompt ``i`` <-> region
  ``i`` as in VideoGrain), the regions whose local prompt is non-empty; regions with an empty local
  prompt (``''``) or without one (more masks than local prompts) are meant to be kept;
* otherwise (a plain prompt), every region.

The **preserved** pixels are those no edited region covers. Without masks, or when the edited regions
cover every pixel, nothing is known to be preserved and the metric is skipped (with the reason).

* PSNR: per frame, from the mean squared error over the preserved pixels and the 3 channels on the
  0..255 scale, ``10 log10(255^2 / MSE)``; identical pixels give ``inf``, reported as ``max_psnr``
  (100 dB); the clip's PSNR is the mean over frames that have preserved pixels.
* SSIM (Wang et al. 2004, the usual constants: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
  per channel then averaged; the formula of ``skimage.metrics.structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False``): the SSIM map is averaged over the window
  centres whose **whole window** is preserved and inside the frame, so that no edited pixel leaks in.
  With no such centre (a thin preserved strip) SSIM is ``None`` and says why.

Frames are ``(F, H, W, 3)`` uint8; masks ``(F, R, H, W)`` bool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # skimage: int(truncate=3.5 * sigma + 0.5) -> an 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


def edited_regions(regions: Sequence[str], local_prompts: Sequence[str] = ()) -> list[str]:
    """The regions an edit changes: with local prompts, those whose prompt is non-empty; else all."""
    if not local_prompts:
        return list(regions)
    return [r for r, p in zip(regions, local_prompts) if p is not None and str(p).strip()]


def preserved_mask(masks: np.ndarray, regions: Sequence[str], edited: Sequence[str]) -> np.ndarray:
    """``(F, H, W)`` bool: pixels covered by none of the ``edited`` regions (``masks (F, R, H, W)``)."""
    index = [list(regions).index(r) for r in edited]
    if not index:
        return np.ones((masks.shape[0], *masks.shape[2:]), dtype=bool)
    return ~np.asarray(masks)[:, index].any(axis=1)


def _to_float(frames: np.ndarray) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 -> ``(F, 3, H, W)`` float64 in [0, 255]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got {frames.shape}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).double()


def masked_psnr(
    source: np.ndarray, output: np.ndarray, keep: np.ndarray | None = None, max_psnr: float = 100.0
) -> tuple[float | None, list[float | None]]:
    """PSNR (dB, 8-bit peak) over the ``keep (F, H, W)`` pixels: ``(clip mean, per frame)``.

    Identical pixels give ``max_psnr``; frames without kept pixels give ``None`` and are left out of
    the mean (``None`` when no frame has any).
    """
    a, b = _to_float(source), _to_float(output)
    if a.shape != b.shape:
        raise ValueError(f"source {tuple(source.shape)} and output {tuple(output.shape)} differ in shape")
    m = (
        torch.ones(a.shape[0], 1, *a.shape[2:], dtype=a.dtype)
        if keep is None
        else _mask(keep, source.shape, a.dtype)
    )
    count = m.sum((1, 2, 3)) * 3
    mse = ((a - b).square() * m).sum((1, 2, 3)) / count.clamp_min(1)
    per_frame: list[float | None] = []
    for c, e in zip(count.tolist(), mse.tolist()):
        if c == 0:
            per_frame.append(None)
        else:
            per_frame.append(max_psnr if e == 0 else min(max_psnr, 10 * math.log10(255.0**2 / e)))
    values = [v for v in per_frame if v is not None]
    return (float(np.mean(values)) if values else None), per_frame


def _mask(keep: np.ndarray, frames_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``(F, H, W)`` bool -> ``(F, 1, H, W)`` of ``dtype``, checked against frames ``(F, H, W, 3)``."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != tuple(frames_shape[:3]):
        raise ValueError(f"mask {keep.shape} does not match frames {tuple(frames_shape)}")
    return torch.from_numpy(keep)[:, None].to(dtype)


def _gaussian_1d() -> np.ndarray:
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return (g / g.sum()).astype(np.float32)


def ssim_map(source: np.ndarray, output: np.ndarray) -> torch.Tensor:
    """SSIM at every window centre that lies fully inside the frame: ``(F, H-10, W-10)``, channel mean.

    Float32 on [0, 1] intensities with a separable Gaussian (OpenCV; agrees with skimage's float64
    to ~1e-5). Only window centres whose window is inside the frame are returned, so the border
    handling of the filter never matters.
    """
    source, output = np.asarray(source), np.asarray(output)
    if source.shape != output.shape or source.ndim != 4 or source.shape[-1] != 3:
        raise ValueError(f"source {source.shape} and output {output.shape} must both be (F, H, W, 3)")
    n, h, w, c = source.shape
    r = SSIM_RADIUS
    if min(h, w) <= 2 * r:
        raise ValueError(f"frames of {h}x{w} are too small for an 11x11 SSIM window")
    g = _gaussian_1d()
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    out = np.zeros((n, h - 2 * r, w - 2 * r), dtype=np.float64)
    for f in range(n):
        for ch in range(c):
            x = source[f, :, :, ch].astype(np.float32) / 255
            y = output[f, :, :, ch].astype(np.float32) / 255

            def blur(t: np.ndarray) -> np.ndarray:
                return cv2.sepFilter2D(t, cv2.CV_32F, g, g, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]

            mx, my = blur(x), blur(y)
            vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
            s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
            out[f] += s / c
    return torch.from_numpy(out)


def masked_ssim(
    source: np.ndarray, output: np.ndarray, keep: np.ndarray | None = None
) -> tuple[float | None, list[float | None]]:
    """SSIM averaged over window centres whose whole window is in ``keep (F, H, W)``: ``(mean, per frame)``.

    With ``keep=None`` this is ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``. The clip value pools
    all counted centres of all frames.
    """
    s = ssim_map(source, output)  # (F, H-10, W-10)
    if keep is None:
        valid = torch.ones_like(s)
    else:
        k = _mask(keep, np.shape(source), torch.float64)  # (F, 1, H, W)
        # a centre counts when its whole window is kept: a min-pool of the mask over the window
        valid = -F.max_pool2d(-k, kernel_size=2 * SSIM_RADIUS + 1, stride=1)[:, 0]
    count = valid.sum((1, 2))
    per_frame = [
        float(v) if n > 0 else None for v, n in zip((s * valid).sum((1, 2)) / count.clamp_min(1), count)
    ]
    total = count.sum()
    return (float((s * valid).sum() / total) if total > 0 else None), per_frame


def preservation(
    source: np.ndarray,
    output: np.ndarray,
    masks: np.ndarray | None,
    regions: Sequence[str],
    local_prompts: Sequence[str] = (),
    max_psnr: float = 100.0,
) -> dict[str, Any]:
    """PSNR/SSIM outside the edited regions of one edit (see the module docstring).

    Args:
        source, output: ``(F, H, W, 3)`` uint8.
        masks: ``(F, R, H, W)`` bool region masks at the working size, or ``None``.
        regions: the ``R`` region names (order of the local prompts).
        local_prompts: the edit's local prompts (``()`` for a plain prompt).
        max_psnr: the value reported for identical pixels (dB).

    Returns:
        ``{"psnr_preserved", "ssim_preserved", "preserved_fraction", "edited_regions"}`` or
        ``{"skipped": reason}``.
    """
    if masks is None:
        return {"skipped": "no region masks: nothing is known to be preserved"}
    edited = edited_regions(regions, local_prompts)
    keep = preserved_mask(masks, regions, edited)
    fraction = float(keep.mean())
    if fraction == 0:
        return {"skipped": f"the edited regions {edited} cover every pixel", "edited_regions": edited}
    psnr, _ = masked_psnr(source, output, keep, max_psnr=max_psnr)
    out: dict[str, Any] = {
        "psnr_preserved": psnr,
        "preserved_fraction": fraction,
        "edited_regions": edited,
    }
    ssim, _ = masked_ssim(source, output, keep)
    out["ssim_preserved"] = ssim
    if ssim is None:
        out["ssim_skipped"] = "no 11x11 window lies entirely in the preserved area"
    return out
