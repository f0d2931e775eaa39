"""Canny edges (weight-free), the input of the ``canny`` ControlNets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from annotators.base import Annotator


class CannyAnnotator(Annotator):
    """OpenCV Canny with ControlNet's default thresholds (100, 200); white edges on black, 3 channels."""

    condition_type = "canny"

    def __init__(self, low_threshold: int = 100, high_threshold: int = 200) -> None:
        if not 0 <= low_threshold <= high_threshold:
            raise ValueError(
                f"need 0 <= low_threshold <= high_threshold, got {low_threshold}, {high_threshold}"
            )
        self.low_threshold = low_threshold
        self.high_threshold = high_threshold

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        edges = [cv2.Canny(f, self.low_threshold, self.high_threshold) for f in frames]
        return np.repeat(np.stack(edges)[..., None], 3, axis=-1)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "low": self.low_threshold, "high": self.high_threshold}
