"""Flows of a clip on disk, keyed by the frames and the estimator's settings.

Entries are safetensors files written atomically with their key, shape and the SHA-256 of the flows'
content in the metadata. On load they are validated; a corrupt or mismatching entry (e.g. bytes changed on
disk with the shape intact) is discarded with a warning and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from videoedit.inversion.cache import tensor_digest
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

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def flows(
        self,
        frames: np.ndarray | torch.Tensor,
        estimator: FlowEstimator,
        direction: Literal["forward", "backward"] = "forward",
    ) -> torch.Tensor:
        """:func:`video_flows` ``(F-1, 2, H, W)`` of frames ``(F, H, W, 3)``, read from the cache when
        computed before (and unchanged on disk)."""
        key = self.key(frames, estimator, direction)
        data = to_uint8_frames(frames)
        shape = (max(0, len(data) - 1), 2, *data.shape[1:3])
        cached = self.load(key, shape)
        if cached is not None:
            return cached
        flows = video_flows(frames, estimator, direction)
        self.save(key, flows)
        return flows

    def load(self, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The cached flows for ``key`` (checked against ``shape`` when given), or ``None`` (missing, or
        invalid and then removed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("videoedit", "{}"))
            flows = load_file(str(path))["flows"]
            if meta.get("key") != key:
                raise ValueError(f"metadata key {meta.get('key')} does not match {key}")
            if "sha256" not in meta:
                raise ValueError("no content checksum (written by an older version)")
            if tensor_digest(flows) != meta["sha256"]:
                raise ValueError("checksum mismatch: the content changed on disk")
            if shape is not None and tuple(flows.shape) != tuple(shape):
                raise ValueError(f"shape {tuple(flows.shape)} != expected {tuple(shape)}")
        except Exception as err:  # a corrupt entry is recomputed
            logger.warning("discarding invalid flow cache entry %s: %s", path, err)
            path.unlink(missing_ok=True)
            return None
        return flows

    def save(self, key: str, flows: torch.Tensor) -> Path:
        """Write ``flows`` under ``key`` atomically, with their checksum."""
        flows = flows.detach().contiguous().cpu()
        meta = {"key": key, "sha256": tensor_digest(flows)}
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file({"flows": flows}, str(tmp), metadata={"videoedit": json.dumps(meta)})
        return path
