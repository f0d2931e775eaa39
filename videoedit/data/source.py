"""The source clip an edit starts from, and the config target that reads it from disk."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from annotators.precomputed import read_condition_video
from videoedit.errors import ConfigError, MaskError
from videoedit.io.masks import read_masks
from videoedit.io.transforms import ResizeSpec, frames_to_tensor, tensor_to_frames
from videoedit.io.video import FrameSampling, read_video, resolve_data_path

logger = logging.getLogger(__name__)


@dataclass
class SourceVideo:
    """A clip ready for editing: frames, region masks and precomputed condition maps, all aligned.

    Attributes:
        frames: ``(F, 3, H, W)`` float32 in [-1, 1] at the working size.
        prompt: the source prompt (used for inversion; may be ``""``).
        fps: frame rate to write results with.
        name: short name used in logs and the result tree.
        indices: index of each frame in the full clip.
        masks: ``(F, R, H, W)`` bool region masks, or ``None``.
        regions: the ``R`` region names, in the order of the local prompts.
        conditions: precomputed condition maps by type (``"openpose"``, ``"depth"``...), each
            ``(F, H, W, 3)`` uint8, used instead of running an annotator.
    """

    frames: torch.Tensor
    prompt: str = ""
    fps: float = 8.0
    name: str = "video"
    indices: list[int] = field(default_factory=list)
    masks: torch.Tensor | None = None
    regions: list[str] = field(default_factory=list)
    conditions: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[1] != 3:
            raise ValueError(f"frames must be (F, 3, H, W), got {tuple(self.frames.shape)}")
        if not self.indices:
            self.indices = list(range(self.num_frames))
        if self.masks is not None:
            expected = (self.num_frames, len(self.regions), *self.size)
            if tuple(self.masks.shape) != expected:
                raise MaskError(
                    f"masks have shape {tuple(self.masks.shape)}, expected (frames, regions, H, W) = {expected}"
                )
        for kind, maps in self.conditions.items():
            if maps.shape != (self.num_frames, *self.size, 3):
                raise ValueError(
                    f"{kind} condition maps have shape {maps.shape}, expected {(self.num_frames, *self.size, 3)}"
                )

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (self.frames.shape[2], self.frames.shape[3])

    def frames_uint8(self) -> np.ndarray:
        """``(F, H, W, 3)`` uint8."""
        return tensor_to_frames(self.frames)

    def union_mask(self) -> torch.Tensor | None:
        """``(F, H, W)`` bool: pixels covered by any region (``None`` without masks)."""
        return None if self.masks is None else self.masks.any(dim=1)


def _resize_spec(resize: Mapping | None) -> ResizeSpec:
    fields = dict(resize or {})
    known = set(ResizeSpec.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"Unknown data.resize key(s) {unknown}: data.resize takes {sorted(known)} (see ResizeSpec)."
        )
    return ResizeSpec(**fields)


class VideoClip:
    """Reads a clip, its region masks and optional precomputed condition maps from disk.

    This is the ``data`` config target. Frames and masks go through the same resize/crop.

    Args:
        path: video file (mp4/gif/webm...) or folder of frames.
        prompt: source prompt (describes the original video; used for inversion).
        masks_dir: folder with one sub-folder of masks per region, or ``None``.
        regions: region names to read, in the order of the local prompts.
        start_frame, num_frames, stride: frame sampling (official: ``start_sample_frame``,
            ``n_sample_frame``, ``sampling_rate``).
        resize: a :class:`ResizeSpec` (or its fields as a mapping).
        conditions: ``{condition_type: path}`` of precomputed condition videos, one map per clip frame.
        name: short name for the result tree (default: the path's stem).
        data_root: where relative ``path``, ``masks_dir`` and ``conditions`` paths are looked up when
            they do not exist relative to the current folder (``paths.data_root`` in the configs).
    """

    def __init__(
        self,
        path: str,
        prompt: str = "",
        masks_dir: str | None = None,
        regions: Sequence[str] = (),
        start_frame: int = 0,
        num_frames: int | None = None,
        stride: int = 1,
        resize: ResizeSpec | Mapping | None = None,
        conditions: Mapping[str, str] | None = None,
        name: str | None = None,
        data_root: str | None = None,
    ) -> None:
        self.data_root = Path(data_root).expanduser() if data_root else None
        self.path = resolve_data_path(path, self.data_root, "data.path")
        self.prompt = prompt or ""
        self.masks_dir = resolve_data_path(masks_dir, self.data_root, "data.masks_dir") if masks_dir else None
        self.regions = list(regions or [])
        self.sampling = FrameSampling(start_frame, num_frames, stride)
        self.resize = resize if isinstance(resize, ResizeSpec) else _resize_spec(resize)
        self.conditions = {
            str(k): str(resolve_data_path(v, self.data_root, f"data.conditions.{k}"))
            for k, v in (conditions or {}).items()
            if v
        }
        self.name = name or self.path.stem
        if self.regions and self.masks_dir is None:
            raise MaskError(
                f"data.regions is {self.regions} but data.masks_dir is not set: give the folder holding "
                "<region>/00000.png masks, or clear data.regions."
            )

    def load(self) -> SourceVideo:
        """Read, resize and crop frames, masks and condition maps (raises on any mismatch)."""
        video = read_video(self.path, self.sampling)
        height, width = video.frames.shape[1:3]
        masks = None
        if self.masks_dir is not None and self.regions:
            masks = torch.from_numpy(read_masks(self.masks_dir, self.regions, video.indices, (height, width)))
        plan = self.resize.plan(height, width)
        frames = plan.apply_images(frames_to_tensor(video.frames))
        if masks is not None:
            masks = plan.apply_masks(masks)
            empty = [
                (r, f) for r in range(masks.shape[1]) for f in range(masks.shape[0]) if not masks[f, r].any()
            ]
            if empty:
                logger.warning(
                    "%d region masks are empty after resizing (first: region %s, frame %d)",
                    len(empty),
                    self.regions[empty[0][0]],
                    video.indices[empty[0][1]],
                )
        size = (frames.shape[2], frames.shape[3])
        conditions = {
            kind: read_condition_video(p, video.indices, size) for kind, p in self.conditions.items()
        }
        return SourceVideo(
            frames=frames,
            prompt=self.prompt,
            fps=video.fps,
            name=self.name,
            indices=video.indices,
            masks=masks,
            regions=list(self.regions) if masks is not None else [],
            conditions=conditions,
        )
