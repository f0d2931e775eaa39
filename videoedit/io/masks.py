"""Region masks in VideoGrain's layout: ``<masks_dir>/<region>/<frame:05d>.png``.

One folder per region, one binary image per frame (any non-zero pixel is inside). The file of a frame
is named by the frame's index in the full clip, as in the official code, so masks stay aligned when
frames are sampled with a start and a stride.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from videoedit.errors import MaskError
from videoedit.io.video import IMAGE_SUFFIXES


def mask_file(masks_dir: Path, region: str, index: int) -> Path | None:
    """The mask image of ``region`` for frame ``index`` (``00007.png``, or another image suffix)."""
    folder = masks_dir / region
    for suffix in (".png", *sorted(IMAGE_SUFFIXES - {".png"})):
        candidate = folder / f"{index:05d}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_masks(
    masks_dir: str | Path,
    regions: Sequence[str],
    indices: Sequence[int],
    frame_size: tuple[int, int],
) -> np.ndarray:
    """Read the masks of ``regions`` for the frames ``indices``.

    Args:
        masks_dir: folder with one sub-folder per region.
        regions: region (sub-folder) names, in the order the method uses them.
        indices: frame indices in the full clip (as returned by ``read_video``).
        frame_size: ``(H, W)`` of the source frames; every mask must have exactly this size.

    Returns:
        ``(F, R, H, W)`` bool array.

    Raises:
        MaskError: a region folder or a frame's mask is missing, unreadable or of another size.
    """
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise MaskError(
            f"Mask folder not found: {masks_dir}. Set data.masks_dir to the folder holding one sub-folder "
            "per region (<region>/00000.png, ...), or data.masks_dir=null for a method that needs no masks."
        )
    available = sorted(p.name for p in masks_dir.iterdir() if p.is_dir())
    missing = [r for r in regions if r not in available]
    if missing:
        raise MaskError(
            f"No mask folder for region(s) {missing} in {masks_dir}; it has {available}. "
            "Fix data.regions (order = order of the local prompts) or add the masks."
        )
    height, width = frame_size
    out = np.zeros((len(indices), len(regions), height, width), dtype=bool)
    for r, region in enumerate(regions):
        for f, index in enumerate(indices):
            path = mask_file(masks_dir, region, index)
            if path is None:
                raise MaskError(
                    f"Mask of region '{region}' for frame {index} is missing: expected "
                    f"{masks_dir / region / f'{index:05d}.png'}. Every region needs one mask per frame read "
                    "(named by the frame's index in the clip)."
                )
            try:
                with Image.open(path) as im:
                    mask = np.asarray(im.convert("L"))
            except Exception as err:
                raise MaskError(f"Could not read mask {path}: {err}.") from err
            if mask.shape != (height, width):
                raise MaskError(
                    f"Mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but the frames are {width}x{height}. "
                    "Masks must have the size of the source frames (they are resized and cropped together "
                    "with them)."
                )
            out[f, r] = mask > 0
    return out


def write_masks(
    masks_dir: str | Path, masks: np.ndarray, regions: Sequence[str], indices: Sequence[int]
) -> None:
    """Write ``(F, R, H, W)`` bool masks in VideoGrain's layout (0/255 PNGs)."""
    masks_dir = Path(masks_dir)
    if masks.shape[:2] != (len(indices), len(regions)):
        raise MaskError(
            f"masks of shape {masks.shape} do not match {len(indices)} frames x {len(regions)} regions"
        )
    for r, region in enumerate(regions):
        folder = masks_dir / region
        folder.mkdir(parents=True, exist_ok=True)
        for f, index in enumerate(indices):
            Image.fromarray(masks[f, r].astype(np.uint8) * 255).save(folder / f"{index:05d}.png")
