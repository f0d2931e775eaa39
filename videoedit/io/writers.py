"""Writing videos (mp4 through imageio-ffmpeg's bundled ffmpeg, gif through Pillow) and frame folders.

All writers take ``(F, H, W, 3)`` uint8 frames and write atomically: a partly written file never
carries its final name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from videoedit.io.atomic import atomic_path


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if len(frames) == 0:
        raise ValueError("no frames to write")
    return frames


def _even(frames: np.ndarray) -> np.ndarray:
    """H.264 with yuv420p needs even sides: pad the last row/column by edge replication."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """Write an H.264 mp4 (yuv420p, plays everywhere)."""
    import imageio

    frames = _even(_check_frames(frames))
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=float(fps),
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,
            output_params=["-crf", str(crf)],
            ffmpeg_log_level="error",
        )
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
    return path


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write a looping gif."""
    frames = _check_frames(frames)
    path = Path(path)
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(1, round(1000.0 / fps)),
            loop=0,
        )
    return path


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write ``frames`` as mp4 or gif, chosen by the suffix of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    if suffix == ".mp4":
        return write_mp4(path, frames, fps)
    raise ValueError(f"unsupported video suffix {suffix!r}: use .mp4 or .gif")


def write_frames(
    folder: str | Path, frames: np.ndarray, names: Sequence[str] | None = None, ext: str = "png"
) -> Path:
    """Write each frame as ``<folder>/00000.png`` (or the given names)."""
    frames = _check_frames(frames)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:05d}" for i in range(len(frames))]
    for frame, name in zip(frames, names, strict=True):
        target = folder / f"{name}.{ext}"
        with atomic_path(target) as tmp:
            Image.fromarray(frame).save(tmp, format="PNG" if ext == "png" else "JPEG")
    return folder
