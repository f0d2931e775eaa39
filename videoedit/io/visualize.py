"""Small visualisations written into the result tree: mask overlays and labelled side-by-side grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, colour-blind friendly region colours (Okabe-Ito), cycled when there are more regions.
REGION_COLORS = np.array(
    [
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [150, 150, 150],
    ],
    dtype=np.float32,
)


def overlay_masks(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Colour each region over the frames, to check mask coverage.

    Args:
        frames: ``(F, H, W, 3)`` uint8.
        masks: ``(F, R, H, W)`` bool. Pixels covered by no region are darkened; overlaps mix colours.

    Returns:
        ``(F, H, W, 3)`` uint8.
    """
    if masks.shape[0] != frames.shape[0] or masks.shape[2:] != frames.shape[1:3]:
        raise ValueError(f"masks {masks.shape} do not match frames {frames.shape}")
    out = frames.astype(np.float32)
    m = masks.astype(np.float32)  # (F, R, H, W)
    colors = REGION_COLORS[np.arange(m.shape[1]) % len(REGION_COLORS)]  # (R, 3)
    count = m.sum(1, keepdims=True)  # (F, 1, H, W)
    color = np.einsum("frhw,rc->fhwc", m, colors) / np.maximum(count, 1).transpose(0, 2, 3, 1)
    covered = (count > 0).transpose(0, 2, 3, 1)
    out = np.where(covered, (1 - alpha) * out + alpha * color, 0.35 * out)
    return out.round().clip(0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def label_frames(frames: np.ndarray, label: str) -> np.ndarray:
    """Add a caption bar with ``label`` above ``(F, H, W, 3)`` frames."""
    height = max(12, frames.shape[1] // 16)
    font = _font(max(8, int(height * 0.75)))
    bar = Image.new("RGB", (frames.shape[2], height + 4), (0, 0, 0))
    ImageDraw.Draw(bar).text((4, 2), label, fill=(255, 255, 255), font=font)
    bar_arr = np.repeat(np.asarray(bar)[None], len(frames), axis=0)
    return np.concatenate([bar_arr, frames], axis=1)


def side_by_side(
    videos: Sequence[np.ndarray], labels: Sequence[str] | None = None, gap: int = 4
) -> np.ndarray:
    """Place videos of equal length and height next to each other, optionally labelled."""
    if not videos:
        raise ValueError("no videos")
    lengths = {len(v) for v in videos}
    if len(lengths) != 1:
        raise ValueError(f"videos have different lengths {sorted(lengths)}")
    if labels is not None:
        videos = [label_frames(v, lab) for v, lab in zip(videos, labels, strict=True)]
    height = max(v.shape[1] for v in videos)
    padded = []
    for i, v in enumerate(videos):
        if v.shape[1] < height:
            v = np.pad(v, ((0, 0), (0, height - v.shape[1]), (0, 0), (0, 0)))
        padded.append(v)
        if gap and i < len(videos) - 1:
            padded.append(np.full((v.shape[0], height, gap, 3), 255, dtype=np.uint8))
    return np.concatenate(padded, axis=2)
