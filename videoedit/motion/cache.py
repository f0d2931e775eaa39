"""Flows of a clip on disk, keyed by the frames and the estimator's settings."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from videoedit.io.atomic import atomic_path
from videoedit.motion.estimators import FlowEstimator, to_uint8_frames, video_flows

logger = logging.getLogger(__name__)


class FlowCache:
    """Flows of a clip on disk (``<root>/<key>.safetensors``), keyed by the frames and the estimator settings."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, frames: np.ndarray | torch.Tensor, estimator: FlowEstimator, direction: str) -> str:
        data = to_uint8_frames(frames)
        digest = hashlib.sha256(np.ascontiguousarray(data).tobytes())
        digest.update(f"{data.shape}:{sorted(estimator.settings().items())}:{direction}".encode())
        return digest.hexdigest()[:32]

    def flows(
        self,
        frames: np.ndarray | torch.Tensor,
        estimator: FlowEstimator,
        direction: Literal["forward", "backward"] = "forward",
    ) -> torch.Tensor:
        """:func:`video_flows`, read from the cache when computed before."""
        path = self.root / f"{self.key(frames, estimator, direction)}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))["flows"]
            except Exception as err:  # a corrupt entry is recomputed
                logger.warning("discarding flow cache entry %s: %s", path, err)
        flows = video_flows(frames, estimator, direction)
        with atomic_path(path) as tmp:
            save_file({"flows": flows.contiguous()}, str(tmp))
        return flows
