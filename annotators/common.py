"""Helpers shared by the annotators: devices, weight lookup (local folder or hub), map resizing, CLIs."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotators.base import Annotator
from videoedit.errors import ModelLoadError
from videoedit.io.video import FrameSampling, VideoFrames, read_video
from videoedit.io.writers import write_frames, write_mp4

logger = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other values are returned unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def module_available(name: str) -> bool:
    """Whether ``import name`` would find the module (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve_weight_file(repo_or_dir: str, filename: str, what: str, alternative: str) -> Path:
    """A weight file from a local folder (``<dir>/<filename>``), a file path, or a hub repo.

    Hub files are fetched with ``huggingface_hub.hf_hub_download`` (from the local cache when
    ``HF_HUB_OFFLINE=1``). Raises :class:`ModelLoadError` naming the file and ``alternative``.
    """
    candidate = Path(repo_or_dir).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        path = candidate / filename
        if path.is_file():
            return path
        raise ModelLoadError(
            f"{what}: weight file {path} not found (the folder exists but has no {filename}). "
            f"Put the file there, or use {alternative}."
        )
    looks_local = repo_or_dir.startswith((".", "/", "~")) or repo_or_dir.count("/") != 1
    if looks_local:
        raise ModelLoadError(
            f"{what}: weights not found at {repo_or_dir} (neither a file, a folder, nor a hub id "
            f"'owner/name'). Give the folder holding {filename}, or use {alternative}."
        )
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_or_dir, filename))
    except Exception as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        raise ModelLoadError(
            f"{what}: could not get {filename} from the hub repo {repo_or_dir}"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {type(err).__name__}. Download it into a "
            f"local folder and pass that folder, or use {alternative}."
        ) from err


def file_stamp(path: str | Path | None) -> dict[str, Any] | str | None:
    """``{"path", "size", "mtime_ns"}`` of a local file (for cache keys: replacing the weights behind the
    same name changes the key); anything that is not a local file (a hub id, a URL, ``None``) is returned
    as given."""
    if path is None:
        return None
    local = Path(path).expanduser()
    if not local.is_file():
        return str(path)
    stat = local.stat()
    return {"path": str(local.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class LazyModelAnnotator(Annotator):
    """An annotator whose model is built on first use; its constructor only checks that it can be
    (weights present, packages importable), so a run fails fast before loading the diffusion model."""

    #: what to suggest when the model cannot be loaded
    offline_alternative: str = "another annotator"
    _detector: Any = None

    def _build(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def detector(self) -> Any:
        """The loaded model (built once)."""
        if self._detector is None:
            try:
                self._detector = self._build()
            except ModelLoadError:
                raise
            except Exception as err:
                raise ModelLoadError(
                    f"{type(self).__name__}: could not load the model ({type(err).__name__}: {err}). "
                    f"Check the weights, or use {self.offline_alternative}."
                ) from err
        return self._detector


def resize_map(image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """Resize an ``(h, w)`` or ``(h, w, C)`` map to ``(height, width, 3)`` uint8 (grey maps get 3 channels)."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    if image.shape[:2] != (height, width):
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        image = cv2.resize(image, (width, height), interpolation=interp)
    return image.astype(np.uint8)


# ------------------------------------------------------------------------------------------- CLIs


def add_clip_arguments(parser: argparse.ArgumentParser, sampling: bool = True) -> None:
    """``--video`` and the frame selection options shared by the annotator CLIs.

    Condition maps are read back by position (one map per clip frame), so the pose/depth CLIs only
    offer ``--num-frames`` (a prefix of the clip); the mask CLI names files by clip index and also
    offers ``--start``/``--stride``.
    """
    parser.add_argument("--video", required=True, help="video file (mp4, gif, ...) or folder of frames")
    parser.add_argument("--num-frames", type=int, default=None, help="frames to read (default: all)")
    if sampling:
        parser.add_argument("--start", type=int, default=0, help="first frame (default 0)")
        parser.add_argument("--stride", type=int, default=1, help="read every n-th frame (default 1)")


def read_clip(args: argparse.Namespace) -> VideoFrames:
    """The frames the CLI arguments select (``(F, H, W, 3)`` uint8 at the clip's own size)."""
    sampling = FrameSampling(getattr(args, "start", 0), args.num_frames, getattr(args, "stride", 1))
    return read_video(args.video, sampling)


def write_condition_maps(out: str | Path, maps: np.ndarray, indices: Sequence[int], fps: float) -> Path:
    """Write maps as ``<out>/00000.png ...`` (named by clip index) plus ``<out>.mp4`` as a preview.

    The PNG folder is lossless and is what ``data.conditions.<type>=<out>`` (or
    ``annotator=precomputed annotator.path=<out>``) reads back.
    """
    out = Path(out)
    write_frames(out, maps, [f"{i:05d}" for i in indices])
    write_mp4(out.with_suffix(".mp4"), maps, fps)
    return out
