"""The per-run result tree (names follow the official VideoGrain output where it makes sense).

::

    <run_dir>/
      config.yaml                     resolved config of the run
      run.log                         log of the run
      source_video.mp4                the processed input clip
      control/00000.png ..., control/control.mp4          ControlNet condition maps
      masks/<region>/00000.png ...    region masks at the working size (VideoGrain layout)
      infer_samples/input/00000.png ..., input.mp4        input frames
      infer_samples/masked_video.mp4  coloured region overlay, to check mask coverage
      sample/<edit>.mp4, sample/<edit>/00000.png ...      each edit (edit<i>_seed<s>)
      sample/comparison.mp4           side by side: input | edit 0 | edit 1 | ...
      sample/edits.json               prompt, local prompts and seed of every edit
      metrics.json                    timings per stage, peak memory, seeds, versions, git revision
      COMPLETE                        written last: the run finished and every file above is in place

The official code names edits ``sample/step_0_<prompt>_<seed>.mp4`` and the grid ``sample/step_0.mp4``;
ours are ``sample/edit<prompt>_seed<seed>.mp4`` and ``sample/comparison.mp4``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videoedit.io.atomic import atomic_path, write_json, write_text
from videoedit.io.masks import write_masks
from videoedit.io.visualize import overlay_masks, side_by_side
from videoedit.io.writers import write_frames, write_mp4

COMPLETE_MARKER = "COMPLETE"


class RunDirectory:
    """Writes one run's result tree; see the module docstring for the layout."""

    def __init__(self, root: str | Path, fps: float = 8.0) -> None:
        self.root = Path(root)
        self.fps = fps

    # -------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.root / "run.log"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def marker_path(self) -> Path:
        return self.root / COMPLETE_MARKER

    @property
    def sample_dir(self) -> Path:
        return self.root / "sample"

    def edit_video_path(self, name: str) -> Path:
        return self.sample_dir / f"{name}.mp4"

    # -------------------------------------------------------------- lifecycle
    @staticmethod
    def is_complete(root: str | Path) -> bool:
        return (Path(root) / COMPLETE_MARKER).is_file()

    def start(self) -> RunDirectory:
        """Create the folder and drop a stale completion marker (a re-run is not finished yet)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker_path.unlink(missing_ok=True)
        return self

    def mark_complete(self, summary: Mapping[str, Any] | None = None) -> Path:
        """Write the completion marker; call it after everything else is written."""
        payload = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **dict(summary or {})}
        return write_text(self.marker_path, json.dumps(payload, indent=2, default=str) + "\n")

    # -------------------------------------------------------------- writers
    def write_config(self, text: str) -> Path:
        return write_text(self.config_path, text)

    def write_source(self, frames: np.ndarray) -> None:
        """``source_video.mp4`` and ``infer_samples/input{/,.mp4}`` from ``(F, H, W, 3)`` uint8."""
        write_mp4(self.root / "source_video.mp4", frames, self.fps)
        write_frames(self.root / "infer_samples" / "input", frames)
        write_mp4(self.root / "infer_samples" / "input.mp4", frames, self.fps)

    def write_control(self, maps: np.ndarray) -> None:
        """``control/00000.png ...`` and ``control/control.mp4``."""
        write_frames(self.root / "control", maps)
        write_mp4(self.root / "control" / "control.mp4", maps, self.fps)

    def write_masks(self, frames: np.ndarray, masks: np.ndarray, regions: Sequence[str]) -> None:
        """``masks/<region>/*.png`` and the coverage overlay ``infer_samples/masked_video.mp4``."""
        write_masks(self.root / "masks", masks, regions, list(range(len(frames))))
        write_mp4(self.root / "infer_samples" / "masked_video.mp4", overlay_masks(frames, masks), self.fps)

    def write_edit(self, name: str, frames: np.ndarray) -> Path:
        """``sample/<name>.mp4`` and ``sample/<name>/00000.png ...``."""
        write_frames(self.sample_dir / name, frames)
        return write_mp4(self.edit_video_path(name), frames, self.fps)

    def write_artifacts(
        self,
        videos: Mapping[str, np.ndarray] | None = None,
        images: Mapping[str, np.ndarray] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Extra outputs by relative path: videos (mp4), images (png), arrays (``.npy``)."""
        for rel, video in (videos or {}).items():
            write_mp4(self.root / rel, video, self.fps)
        for rel, image in (images or {}).items():
            path = self.root / rel
            write_frames(path.parent, image[None], [path.stem])
        for rel, array in (arrays or {}).items():
            with atomic_path(self.root / rel) as tmp:
                np.save(tmp, np.asarray(array))

    def write_comparison(self, videos: Sequence[np.ndarray], labels: Sequence[str]) -> Path:
        return write_mp4(self.sample_dir / "comparison.mp4", side_by_side(videos, labels), self.fps)

    def write_edits_index(self, edits: Sequence[Mapping[str, Any]]) -> Path:
        return write_json(self.sample_dir / "edits.json", list(edits))

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        return write_json(self.metrics_path, dict(metrics))
