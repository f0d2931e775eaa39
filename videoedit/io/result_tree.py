"""The per-run result tree (names follow the official VideoGrain output where it makes sense).

::

    <run_dir>/
      config.yaml                     resolved config of the run
      run.log                         log of the run
      source_video.mp4                the processed input clip
      control/00000.png ..., control/control.mp4          ControlNet condition maps
      masks/<region>/00000.png ...    region masks at the working size (VideoGrain layout)
      infer_samples/input/00000.png ..., input.mp4        input frames
      infer_samples/masked_video.mp4, masked_video/00000.png ...   coloured region overlay with a legend
      sample/<edit>.mp4, sample/<edit>/00000.png ...      each edit (edit<i>_seed<s>)
      sample/comparison.mp4           side by side: input | edit 0 | edit 1 | ..., labelled with the prompts
      sample/edits.json               prompt, local prompts and seed of every edit
      metrics.json                    timings per stage, peak memory, seeds, versions, git revision
      MANIFEST.json                   every file above with its size and SHA-256
      COMPLETE                        written last: the run finished and every file above is in place

**Complete means complete.** During a run everything is written into ``<run_dir>/.incomplete/``; when
the run finishes (:meth:`RunDirectory.mark_complete`) the files of an earlier run in the folder (those its
``MANIFEST.json`` lists) are removed, the new manifest is written, the new files are moved into place and
``COMPLETE`` is written last, holding the manifest's checksum. A killed run therefore leaves only
``.incomplete/`` (cleared when the next run starts) beside the previous finished run, never its own
``metrics.json`` or videos; Hydra's files (``.hydra/``, the job log ``run.log``) are not part of the tree
and are left alone. :meth:`RunDirectory.verify` checks a finished tree against its manifest (resume redoes
a run whose listed files are missing or changed: ``videoedit/sweeps.py``).

The official code names edits ``sample/step_0_<prompt>_<seed>.mp4`` and the grid ``sample/step_0.mp4``;
ours are ``sample/edit<prompt>_seed<seed>.mp4`` and ``sample/comparison.mp4``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videoedit.io.atomic import atomic_path, write_json, write_text
from videoedit.io.manifest import (
    MANIFEST_FORMAT,
    build_manifest,
    file_sha256,
    files_under,
    verify_manifest,
)
from videoedit.io.masks import write_masks
from videoedit.io.visualize import add_legend, overlay_masks, prompt_label, side_by_side
from videoedit.io.writers import write_frames, write_mp4
from videoedit.numerics import json_safe

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
MANIFEST_NAME = "MANIFEST.json"
STAGING_NAME = ".incomplete"
MANIFEST_METRICS = "metrics.json"


class RunDirectory:
    """Writes one run's result tree; see the module docstring for the layout."""

    def __init__(self, root: str | Path, fps: float = 8.0) -> None:
        self.root = Path(root)
        self.fps = fps
        self._staging = False  # set by start(): files go to .incomplete/ until mark_complete()

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
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def staging_dir(self) -> Path:
        """Where a started run writes until it is complete (``<run_dir>/.incomplete``)."""
        return self.root / STAGING_NAME

    @property
    def sample_dir(self) -> Path:
        return self.root / "sample"

    def edit_video_path(self, name: str) -> Path:
        """Final path of an edit's video (relative to :attr:`root`, it is the name listed in ``edits.json``)."""
        return self.sample_dir / f"{name}.mp4"

    def _out(self, rel: str | Path) -> Path:
        """Where the tree's file ``rel`` is written now: under :attr:`staging_dir` during a started run."""
        return (self.staging_dir if self._staging else self.root) / rel

    # -------------------------------------------------------------- lifecycle
    @staticmethod
    def is_complete(root: str | Path) -> bool:
        """Whether ``root`` has the ``COMPLETE`` marker (:meth:`verify` checks its files too)."""
        return (Path(root) / COMPLETE_MARKER).is_file()

    def start(self) -> RunDirectory:
        """Begin a (re-)run: drop the completion marker and a killed run's ``.incomplete/`` folder; every
        writer then writes into a fresh ``.incomplete/`` until :meth:`mark_complete`."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker_path.unlink(missing_ok=True)
        if self.staging_dir.exists():
            logger.info("removing the unfinished outputs of an earlier run: %s", self.staging_dir)
            shutil.rmtree(self.staging_dir)
        self.staging_dir.mkdir()
        self._staging = True
        return self

    def mark_complete(self, summary: Mapping[str, Any] | None = None) -> Path:
        """Finish the run; call it after everything else is written.

        A started run's files replace the previous run's (those its manifest lists) and ``MANIFEST.json``
        lists them with sizes and SHA-256; ``COMPLETE`` (written last) holds the manifest's SHA-256. Without
        :meth:`start`, the manifest lists every file of the folder but hidden ones, the logs and the markers.
        """
        if self._staging:
            files = files_under(self.staging_dir)
            self._remove_listed()  # the previous run's files (a forced re-run, or a publish cut short)
            manifest = self._write_manifest(self.staging_dir, files)
            for rel in files:
                target = self.root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.staging_dir / rel, target)
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            self._staging = False
        else:
            skip = (COMPLETE_MARKER, MANIFEST_NAME, self.log_path.name)
            files = [f for f in files_under(self.root, skip) if not f.endswith(".log")]
            manifest = self._write_manifest(self.root, files)
        payload = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **dict(summary or {}),
            "files": len(files),
            "manifest_sha256": file_sha256(manifest),
        }
        return write_text(self.marker_path, json.dumps(payload, indent=2, default=str) + "\n")

    def _write_manifest(self, folder: Path, files: Sequence[str]) -> Path:
        return write_json(self.manifest_path, build_manifest(folder, files))

    def _listed(self) -> dict[str, dict[str, Any]]:
        """The files the folder's manifest lists (``{}`` without a readable one)."""
        try:
            files = json.loads(self.manifest_path.read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return files if isinstance(files, dict) else {}

    def _remove_listed(self) -> None:
        """Delete the files the current manifest lists (never anything outside the folder), then the
        folders left empty, then the manifest."""
        root = self.root.resolve()
        emptied = set()
        for rel in self._listed():
            path = (self.root / rel).resolve()
            if not path.is_relative_to(root) or path == root:
                continue  # a manifest never lists anything outside its own folder
            if path.is_file():
                path.unlink()
                emptied.update(p for p in path.parents if p != root and p.is_relative_to(root))
        for folder in sorted(emptied, key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):  # not empty: something else lives there
                folder.rmdir()
        self.manifest_path.unlink(missing_ok=True)

    def verify(self) -> list[str]:
        """Problems of a finished tree against its manifest (``[]``: every listed file is there, unchanged).

        Checks that ``COMPLETE`` names the manifest's checksum and that each listed file exists with its
        recorded size and SHA-256.
        """
        if not self.is_complete(self.root):
            return [f"no {COMPLETE_MARKER} marker"]
        if not self.manifest_path.is_file():
            return [f"no {MANIFEST_NAME} (written by an older version, or removed)"]
        try:
            marker = json.loads(self.marker_path.read_text(encoding="utf-8"))
        except ValueError:
            marker = {}
        recorded = marker.get("manifest_sha256") if isinstance(marker, dict) else None
        if recorded != file_sha256(self.manifest_path):
            return [f"{MANIFEST_NAME} does not match the checksum recorded in {COMPLETE_MARKER}"]
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except ValueError:
            manifest = None
        return verify_manifest(self.root, manifest)

    def update_manifest(self, rels: Sequence[str]) -> None:
        """Record the current size and checksum of files ``rels`` of a finished tree (after a deliberate
        rewrite, e.g. recomputed metrics), and the new manifest's checksum in ``COMPLETE``."""
        if not self.is_complete(self.root) or not self.manifest_path.is_file():
            return
        listed = self._listed()
        for rel in rels:
            path = self.root / rel
            listed[rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
        manifest = write_json(
            self.manifest_path, {"format": MANIFEST_FORMAT, "files": dict(sorted(listed.items()))}
        )
        try:
            marker = json.loads(self.marker_path.read_text(encoding="utf-8"))
        except ValueError:
            marker = {}
        marker = marker if isinstance(marker, dict) else {}
        marker["manifest_sha256"] = file_sha256(manifest)
        write_text(self.marker_path, json.dumps(marker, indent=2, default=str) + "\n")

    # -------------------------------------------------------------- writers
    def write_config(self, text: str) -> Path:
        return write_text(self._out("config.yaml"), text)

    def write_source(self, frames: np.ndarray) -> None:
        """``source_video.mp4`` and ``infer_samples/input{/,.mp4}`` from ``(F, H, W, 3)`` uint8."""
        write_mp4(self._out("source_video.mp4"), frames, self.fps)
        write_frames(self._out("infer_samples/input"), frames)
        write_mp4(self._out("infer_samples/input.mp4"), frames, self.fps)

    def write_control(self, maps: np.ndarray) -> None:
        """``control/00000.png ...`` and ``control/control.mp4``."""
        write_frames(self._out("control"), maps)
        write_mp4(self._out("control/control.mp4"), maps, self.fps)

    def write_masks(self, frames: np.ndarray, masks: np.ndarray, regions: Sequence[str]) -> None:
        """``masks/<region>/*.png`` and the coverage overlay with a legend of the regions' names and
        colours, as ``infer_samples/masked_video.mp4`` and ``infer_samples/masked_video/00000.png ...``."""
        write_masks(self._out("masks"), masks, regions, list(range(len(frames))))
        overlay = add_legend(overlay_masks(frames, masks), regions)
        write_frames(self._out("infer_samples/masked_video"), overlay)
        write_mp4(self._out("infer_samples/masked_video.mp4"), overlay, self.fps)

    def write_edit(self, name: str, frames: np.ndarray) -> Path:
        """``sample/<name>.mp4`` and ``sample/<name>/00000.png ...``."""
        write_frames(self._out(f"sample/{name}"), frames)
        return write_mp4(self._out(f"sample/{name}.mp4"), frames, self.fps)

    def write_artifacts(
        self,
        videos: Mapping[str, np.ndarray] | None = None,
        images: Mapping[str, np.ndarray] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Extra outputs by relative path: videos (mp4), images (png), arrays (``.npy``)."""
        for rel, video in (videos or {}).items():
            write_mp4(self._out(rel), video, self.fps)
        for rel, image in (images or {}).items():
            path = self._out(rel)
            write_frames(path.parent, image[None], [path.stem])
        for rel, array in (arrays or {}).items():
            with atomic_path(self._out(rel)) as tmp:
                np.save(tmp, np.asarray(array))

    def write_comparison(
        self,
        videos: Sequence[np.ndarray],
        labels: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        max_prompt_chars: int = 60,
    ) -> Path:
        """``sample/comparison.mp4``: the videos side by side under their labels.

        Args:
            videos: ``(F, H, W, 3)`` uint8 each (e.g. the input, then every edit).
            labels: one per video (``input``, ``edit0_seed0``...).
            prompts: one per video (``None``/``""`` for none, e.g. the input's empty source prompt):
                each label becomes ``"<label>: <prompt shortened to max_prompt_chars>"``, wrapped.
        """
        if prompts is not None:
            labels = [prompt_label(lab, p, max_prompt_chars) for lab, p in zip(labels, prompts, strict=True)]
        grid = side_by_side(videos, labels, wrap=prompts is not None)
        return write_mp4(self._out("sample/comparison.mp4"), grid, self.fps)

    def write_edits_index(self, edits: Sequence[Mapping[str, Any]]) -> Path:
        return write_json(self._out("sample/edits.json"), list(edits))

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """``metrics.json``, always valid JSON: non-finite numbers are written as ``null`` and their keys
        listed under ``"non_finite"``."""
        clean, nonfinite = json_safe(dict(metrics))
        if nonfinite:
            clean["non_finite"] = sorted(set(clean.get("non_finite") or []) | set(nonfinite))
        return write_json(self._out("metrics.json"), clean)

    def rewrite_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Rewrite a finished run's ``metrics.json`` (recomputed quality metrics) and its manifest entry."""
        path = self.write_metrics(metrics)
        self.update_manifest([MANIFEST_METRICS])
        return path
