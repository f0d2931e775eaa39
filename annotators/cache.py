"""On-disk cache of annotator outputs (condition maps, region masks), keyed by input content + settings.

Pose/depth maps and propagated masks are computed once per (frames, annotator settings) and reused
across runs and sweeps. The key digests the frames' bytes and shape, the clip indices, the kind of
output and every setting that determines it (``Annotator.settings()``, prompts, propagation options).

Entries are safetensors files ``<root>/<key[:2]>/<key>.safetensors`` written atomically, with the key,
the format and the SHA-256 of the array's content (dtype, shape, bytes) in the metadata. On load they are
validated (key, format, checksum, shape, dtype); a corrupt or mismatching entry (e.g. bytes changed on disk
with the shape intact) is discarded with a warning and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from annotators.base import Annotator
from videoedit.io.atomic import atomic_path

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def array_digest(x: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256(f"{x.dtype}:{x.shape}:".encode())
    digest.update(x.tobytes())
    return digest.hexdigest()


class AnnotationCache:
    """Annotator outputs stored under ``<root>/<key[:2]>/<key>.safetensors``.

    Args:
        root: the cache folder (the run uses ``<paths.cache_root>/annotations``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    @staticmethod
    def key(
        kind: str,
        frames: np.ndarray,
        settings: Mapping[str, Any],
        indices: Sequence[int] | None = None,
    ) -> str:
        """A stable key for output ``kind`` of ``frames (F, H, W, 3)`` under ``settings`` (JSON-able)."""
        parts = {
            "format": CACHE_FORMAT,
            "kind": kind,
            "frames": array_digest(np.asarray(frames)),
            "indices": None if indices is None else [int(i) for i in indices],
            "settings": dict(settings),
        }
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def load(self, key: str, shape: tuple[int, ...] | None = None, dtype: Any = None) -> np.ndarray | None:
        """The cached array for ``key`` (checked against ``shape``/``dtype`` when given), or ``None``."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="np") as f:
                meta = json.loads((f.metadata() or {}).get("videoedit", "{}"))
            if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"metadata key/format {meta.get('key')}/{meta.get('format')} do not match")
            array = load_file(str(path))["data"]
            if "sha256" not in meta:
                raise ValueError("no content checksum (written by an older version)")
            if array_digest(array) != meta["sha256"]:
                raise ValueError("checksum mismatch: the content changed on disk")
            if shape is not None and tuple(array.shape) != tuple(shape):
                raise ValueError(f"shape {tuple(array.shape)} != expected {tuple(shape)}")
            if dtype is not None and array.dtype != np.dtype(dtype):
                raise ValueError(f"dtype {array.dtype} != expected {np.dtype(dtype)}")
        except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            logger.warning("discarding invalid annotation cache entry %s: %s", path, err)
            path.unlink(missing_ok=True)
            return None
        return array

    def save(self, key: str, array: np.ndarray, info: Mapping[str, Any] | None = None) -> Path:
        """Write ``array`` under ``key`` atomically."""
        array = np.ascontiguousarray(array)
        meta = {"key": key, "format": CACHE_FORMAT, "sha256": array_digest(array), "info": dict(info or {})}
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(
                {"data": array},
                str(tmp),
                metadata={"videoedit": json.dumps(meta, default=str)},
            )
        return path

    def get_or_compute(
        self,
        kind: str,
        frames: np.ndarray,
        settings: Mapping[str, Any],
        compute: Callable[[], np.ndarray],
        indices: Sequence[int] | None = None,
        shape: tuple[int, ...] | None = None,
        dtype: Any = None,
    ) -> tuple[np.ndarray, bool]:
        """``(array, hit)``: the cached output, or ``compute()`` stored for next time."""
        key = self.key(kind, frames, settings, indices)
        cached = self.load(key, shape, dtype)
        if cached is not None:
            logger.info("annotation cache hit: %s %s", kind, key)
            return cached, True
        array = np.asarray(compute())
        self.save(key, array, {"kind": kind, "settings": dict(settings)})
        logger.info("annotation cache miss: %s %s (stored)", kind, key)
        return array, False

    def annotate(
        self, annotator: Annotator, frames: np.ndarray, indices: Sequence[int] | None = None
    ) -> tuple[np.ndarray, bool]:
        """``(maps, hit)``: ``annotator(frames, indices)`` through the cache.

        Args:
            frames: ``(F, H, W, 3)`` uint8 at the working size.
            indices: index of each frame in the full clip.
        """
        frames = np.asarray(frames)
        return self.get_or_compute(
            f"condition/{annotator.condition_type}",
            frames,
            annotator.settings(),
            lambda: annotator(frames, indices),
            indices=indices,
            shape=frames.shape,
            dtype=np.uint8,
        )
