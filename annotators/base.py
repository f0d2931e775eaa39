"""The annotator interface: frames in, ControlNet condition maps (or masks) out.

An annotator turns the processed source frames ``(F, H, W, 3)`` uint8 into condition maps of the same
shape, in the format the ControlNet of its ``condition_type`` expects (OpenPose skeletons on black,
depth with near = bright, Canny edges in white...). Annotators are plain classes with explicit
constructor arguments, so Hydra configs (``configs/annotator/*.yaml``) instantiate them directly, and
each can run as a small CLI over a clip.

``settings()`` returns everything that determines the output besides the frames; together with the
frames it keys the annotation cache.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np


class Annotator(ABC):
    """Base class of condition builders."""

    #: the ControlNet condition this annotator produces ("openpose", "depth", "canny", ...)
    condition_type: str = ""
    #: bump when a code change alters the output for the same settings (part of the cache key)
    version: int = 1
    #: whether outputs go through the annotation cache (``False`` for annotators that only read files:
    #: a cache entry would outlive edits of those files)
    cacheable: bool = True

    @abstractmethod
    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        """Condition maps for ``frames``.

        Args:
            frames: ``(F, H, W, 3)`` uint8 RGB, already resized/cropped to the working size.
            indices: index of each frame in the full clip (annotators reading precomputed maps need
                them; detectors ignore them).

        Returns:
            ``(F, H, W, 3)`` uint8 condition maps aligned with ``frames``.
        """

    def settings(self) -> dict[str, Any]:
        """What determines the output besides the frames (used in cache keys)."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "condition_type": self.condition_type,
            "version": self.version,
        }

    def __call__(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"{type(self).__name__} expects (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}"
            )
        out = self.annotate(frames, indices)
        if out.shape != frames.shape or out.dtype != np.uint8:
            raise RuntimeError(
                f"{type(self).__name__} returned {out.shape} {out.dtype}, expected {frames.shape} uint8"
            )
        return out
