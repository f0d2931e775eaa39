"""Reading videos: mp4/gif/webm files (decord, with an imageio fallback) and folders of frames.

Frames come back as ``uint8`` arrays of shape ``(F, H, W, 3)`` together with the indices (in the full
clip) of the frames that were read, so that masks and condition maps can be read for exactly the same
frames.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from videoedit.errors import NotEnoughFramesError, VideoReadError

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv", ".m4v"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
DEFAULT_FPS = 8.0  # what the official VideoGrain code writes; used when a frame folder has no fps


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a clip to read: ``start, start + stride, ...`` (``num_frames`` of them).

    ``num_frames=None`` reads every frame from ``start`` on. This matches the official VideoGrain
    dataset (``start_sample_frame``, ``sampling_rate``, ``n_sample_frame``).
    """

    start: int = 0
    num_frames: int | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        if self.start < 0:
            raise NotEnoughFramesError(f"Frame sampling start must be >= 0, got {self.start}.")
        if self.stride < 1:
            raise NotEnoughFramesError(f"Frame sampling stride must be >= 1, got {self.stride}.")
        if self.num_frames is not None and self.num_frames < 1:
            raise NotEnoughFramesError(f"num_frames must be >= 1 (or null for all), got {self.num_frames}.")

    def indices(self, total: int, source: str | Path = "the video") -> list[int]:
        """The frame indices to read from a clip of ``total`` frames; raises if it is too short."""
        if self.num_frames is None:
            idx = list(range(self.start, total, self.stride))
            if not idx:
                raise NotEnoughFramesError(
                    f"{source} has {total} frames, so there is nothing to read from start={self.start}. "
                    "Lower data.start_frame."
                )
            return idx
        last = self.start + (self.num_frames - 1) * self.stride
        if last >= total:
            available = max(0, (total - 1 - self.start) // self.stride + 1) if total > self.start else 0
            raise NotEnoughFramesError(
                f"{source} has {total} frames, but start={self.start}, stride={self.stride}, "
                f"num_frames={self.num_frames} needs frame {last}. Only {available} frames are available "
                "with this start and stride: lower data.num_frames or data.stride, or pick another clip."
            )
        return [self.start + i * self.stride for i in range(self.num_frames)]


def _natural_key(path: Path) -> list[object]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder, in natural order (``2.png`` before ``10.png``)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def resolve_data_path(path: str | Path, data_root: str | Path | None, key: str = "data.path") -> Path:
    """Where a data path points: absolute paths as given; a relative one relative to the current folder
    if it exists there, else relative to ``data_root`` (``paths.data_root``).

    Raises:
        VideoReadError: a relative path found in neither place (the message names both).
    """
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists() or data_root is None:
        return given
    root = Path(data_root).expanduser()
    if given.parts[: len(root.parts)] == root.parts:  # already built from data_root (a relative root)
        return given
    under_root = root / given
    if under_root.exists():
        return under_root
    what = "Video" if key == "data.path" else "Path"
    raise VideoReadError(
        f"{what} not found: {key}={path} is neither in the current folder ({Path.cwd()}) nor under "
        f"paths.data_root ({Path(data_root).expanduser().absolute()}). Give an absolute path, a path "
        "relative to the folder you run from, or one relative to paths.data_root (env VIDEOEDIT_DATA_ROOT)."
    )


def _check_path(path: Path) -> None:
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise VideoReadError(
            f"Video not found: {path}{where}. Set data.path to a video file "
            f"({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder of frames; in data configs a relative "
            "data.path is also looked up under paths.data_root."
        )
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoReadError(
            f"{path} is not a video file this reader knows (suffix {path.suffix!r}); use one of "
            f"{', '.join(sorted(VIDEO_SUFFIXES))} or a folder of frames."
        )


def count_frames(path: str | Path) -> int:
    """Number of frames of a video file or a frame folder (cheap: no decoding for folders)."""
    path = Path(path)
    _check_path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    return _open_video(path).num_frames


@dataclass
class _VideoHandle:
    num_frames: int
    fps: float
    reader: object  # decord.VideoReader or a list of decoded frames (imageio fallback)

    def get(self, indices: list[int]) -> np.ndarray:
        if isinstance(self.reader, list):
            return np.stack([self.reader[i] for i in indices])
        return self.reader.get_batch(indices).asnumpy()


def _open_video(path: Path) -> _VideoHandle:
    errors: list[str] = []
    if path.suffix.lower() != ".gif":  # decord reads gifs without their frame timing; imageio does better
        try:
            import decord

            reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
            fps = float(reader.get_avg_fps()) or DEFAULT_FPS
            return _VideoHandle(len(reader), fps, reader)
        except Exception as err:  # decord raises its own DECORDError, or RuntimeError
            errors.append(f"decord: {err}")
    try:
        import imageio.v3 as iio

        frames = [np.asarray(f)[..., :3] for f in iio.imiter(path)]
        meta = iio.immeta(path)
        fps = float(meta.get("fps") or 0.0)
        if not fps and meta.get("duration"):  # gif: duration of one frame in ms
            fps = 1000.0 / float(meta["duration"])
        if frames and frames[0].ndim == 2:
            frames = [np.repeat(f[..., None], 3, axis=-1) for f in frames]
        if not frames:
            raise ValueError("no frames decoded")
        return _VideoHandle(len(frames), fps or DEFAULT_FPS, frames)
    except Exception as err:
        errors.append(f"imageio: {err}")
    raise VideoReadError(
        f"Could not decode video {path} ({'; '.join(errors)}). Check that the file is a complete video "
        "(try playing it), or extract its frames to a folder and point data.path there."
    )


def _read_image_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as err:
        raise VideoReadError(f"Could not read frame {path}: {err}. Replace or remove the file.") from err


@dataclass
class VideoFrames:
    """Frames read from a clip.

    Attributes:
        frames: ``(F, H, W, 3)`` uint8 RGB.
        indices: index in the full clip of each frame read (``F`` ints).
        fps: frame rate of the source, divided by the sampling stride.
        names: for frame folders, the file stem of each frame (used to find its mask); else ``None``.
    """

    frames: np.ndarray
    indices: list[int]
    fps: float
    names: list[str] | None = None


def read_video(path: str | Path, sampling: FrameSampling | None = None) -> VideoFrames:
    """Read frames of a video file or a frame folder.

    Args:
        path: an mp4/gif/webm/... file or a folder of images (read in natural order).
        sampling: which frames to read; all frames when ``None``.

    Returns:
        :class:`VideoFrames` with ``frames`` of shape ``(F, H, W, 3)`` uint8.

    Raises:
        VideoReadError: the path is missing, not a video, or cannot be decoded.
        NotEnoughFramesError: the clip is shorter than the sampling needs.
    """
    path = Path(path)
    sampling = sampling or FrameSampling()
    _check_path(path)
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise VideoReadError(
                f"Frame folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}). "
                "Point data.path at the folder that contains the frames."
            )
        idx = sampling.indices(len(files), path)
        frames = [_read_image_rgb(files[i]) for i in idx]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise VideoReadError(f"Frames in {path} have different sizes {sorted(shapes)}; all must match.")
        fps = DEFAULT_FPS / sampling.stride
        return VideoFrames(np.stack(frames), idx, fps, [files[i].stem for i in idx])
    handle = _open_video(path)
    idx = sampling.indices(handle.num_frames, path)
    frames = handle.get(idx)
    logger.debug(
        "read %d frames from %s (%d in clip, %.2f fps)", len(idx), path, handle.num_frames, handle.fps
    )
    return VideoFrames(frames, idx, handle.fps / sampling.stride)
