"""Condition maps read from a video or frame folder made beforehand (by any tool)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotators.base import Annotator
from videoedit.errors import NotEnoughFramesError
from videoedit.io.transforms import ResizeSpec
from videoedit.io.video import FrameSampling, count_frames, read_video


def read_condition_video(path: str | Path, indices: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """Frames ``indices`` of a condition video, scaled and center-cropped to ``size = (H, W)``.

    The maps must have been computed on the same source frames (same aspect ratio); they then go
    through the same scale-and-crop as the frames.
    """
    total = count_frames(path)
    if max(indices) >= total:
        raise NotEnoughFramesError(
            f"Condition video {path} has {total} frames but frame {max(indices)} is needed: it must have one "
            "condition map per frame of the source clip."
        )
    # Read the contiguous span once, then pick the frames we need.
    span = read_video(path, FrameSampling(start=min(indices), num_frames=max(indices) - min(indices) + 1))
    maps = span.frames[[i - min(indices) for i in indices]]
    plan = ResizeSpec("center_crop", height=size[0], width=size[1]).plan(*maps.shape[1:3])
    if plan.is_identity:
        return maps
    x = torch.from_numpy(maps).permute(0, 3, 1, 2).float()
    x = plan.apply_images(x).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


class PrecomputedCondition(Annotator):
    """Use condition maps from ``path`` (one per frame of the source clip, same aspect ratio).

    Not cached (``cacheable = False``): reading the maps is the whole work, and a cache entry would
    outlive maps rewritten in place.
    """

    cacheable = False

    def __init__(self, path: str, condition_type: str) -> None:
        self.path = str(path)
        self.condition_type = condition_type

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        if indices is None:
            indices = list(range(len(frames)))
        return read_condition_video(self.path, indices, frames.shape[1:3])

    def settings(self) -> dict[str, Any]:
        """The path and a digest of what is there: ``(name, size, mtime)`` of the file, or of every file
        of the folder (rewriting one map in place changes it)."""
        p = Path(self.path)
        if p.is_file():
            listing = [(p.name, *_stamp(p))]
        elif p.is_dir():
            listing = sorted((f.name, *_stamp(f)) for f in p.iterdir() if f.is_file())
        else:
            listing = []
        digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
        return {**super().settings(), "path": str(p.resolve()), "files": len(listing), "digest": digest}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
