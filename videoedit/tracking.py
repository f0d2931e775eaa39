"""Experiment tracking through accelerate's trackers (TensorBoard, Weights & Biases, ...), off by default.

A run logs its config, its timings, memory and quality metrics, and its edited videos::

    tracker = ExperimentTracker.from_config(cfg.get("tracking"))   # None when tracking is off
    if tracker is not None:
        tracker.start(OmegaConf.to_container(cfg, resolve=True), run_name="instance_edit/<run_id>")
        tracker.log_run(metrics, {"edit0_seed0": frames}, fps=8)      # after metrics.json is written
        tracker.end()

The entry points (``videoedit run``/``run.py`` and :func:`videoedit.api.edit_video`) do this around
``edit()``: the tracker is built (and its package checked) before the run, the finished run is logged
after it (:func:`log_finished_run`).

Turn it on with a config of the ``tracking`` group (not in the default config: off unless asked for):
``videoedit run +tracking=tensorboard ...`` (logs under ``<output_root>/tensorboard``; view with
``tensorboard --logdir outputs/tensorboard``) or ``+tracking=wandb`` (``pip install wandb``; ``wandb login``,
or ``tracking.init_kwargs.wandb.mode=offline``). Any tracker accelerate knows (``aim``, ``mlflow``,
``comet_ml``, ``clearml``, ``dvclive``, ``swanlab``, ``trackio``) works through ``tracking.log_with``.

Only the main process logs (accelerate's trackers log on the main process only). Videos go to TensorBoard
as a strip of ``video_frames`` evenly spaced frames (its own video format needs moviepy), to W&B as videos,
and to other trackers with an image API as frames.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from videoedit.errors import ConfigError

logger = logging.getLogger(__name__)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a/b/c": leaf}``; lists and other non-scalar leaves become strings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of :func:`flatten` (scalar metrics; strings, booleans and NaN are left out)."""
    flat = flatten(values)
    return {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }


class ExperimentTracker:
    """Logs a run to accelerate's trackers: see the module docstring.

    Args:
        log_with: tracker names (``tensorboard``, ``wandb``, ... as accelerate names them).
        project_name: the project (W&B project; TensorBoard's top folder under ``logging_dir``).
        logging_dir: where file-based trackers write (TensorBoard: ``<logging_dir>/<project>/<run name>``).
        init_kwargs: per tracker, keyword arguments for its constructor (e.g. ``{"wandb": {"mode":
            "offline", "entity": "me"}}``).
        log_videos: log the edited videos.
        video_frames: frames of each video logged as images (TensorBoard and image-only trackers).

    Raises:
        ConfigError: an unknown tracker, or one whose package is not installed (before any work).
    """

    def __init__(
        self,
        log_with: Sequence[str] = ("tensorboard",),
        project_name: str = "videoedit",
        logging_dir: str | None = None,
        init_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        log_videos: bool = True,
        video_frames: int = 4,
    ) -> None:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

        names = [str(n) for n in ([log_with] if isinstance(log_with, str) else log_with)]
        if not names:
            raise ConfigError("tracking.log_with is empty: name a tracker (tensorboard, wandb, ...).")
        unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
        if unknown:
            raise ConfigError(
                f"Unknown tracker(s) {unknown} in tracking.log_with: accelerate knows {sorted(LOGGER_TYPE_TO_CLASS)}."
            )
        available = {str(t) for t in get_available_trackers()}
        missing = [n for n in names if n not in available]
        if missing:
            raise ConfigError(
                f"Tracker(s) {missing} are not installed: `pip install {' '.join(missing)}` "
                "(tensorboard also comes with `pip install videoedit[tracking]`), or drop +tracking."
            )
        self.names = names
        self.project_name = str(project_name)
        self.logging_dir = str(logging_dir) if logging_dir else None
        if self.logging_dir is None and any(
            LOGGER_TYPE_TO_CLASS[n].requires_logging_directory for n in names
        ):
            raise ConfigError(f"tracking.logging_dir is needed by {names}: give a folder.")
        self.init_kwargs = {str(k): dict(v or {}) for k, v in (init_kwargs or {}).items()}
        self.log_videos = bool(log_videos)
        if int(video_frames) < 1:
            raise ConfigError(f"tracking.video_frames must be >= 1, got {video_frames}.")
        self.video_frames = int(video_frames)
        self.trackers: list[Any] = []

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> ExperimentTracker | None:
        """The tracker of a ``tracking`` config node (``None`` when the node is absent: tracking off)."""
        if not node:
            return None
        from hydra.utils import instantiate

        if "_target_" in node:
            return instantiate(node, _convert_="all")
        return cls(**dict(node))

    # ------------------------------------------------------------------ lifecycle
    def start(self, config: Mapping[str, Any], run_name: str) -> None:
        """Create the trackers for ``run_name`` and log the resolved ``config`` as hyperparameters."""
        import os

        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        safe = run_name.replace(os.sep, "_")
        for name in self.names:
            tracker_class = LOGGER_TYPE_TO_CLASS[name]
            kwargs = dict(self.init_kwargs.get(name, {}))
            if name == "wandb":
                kwargs.setdefault("project", self.project_name)
                tracker = tracker_class(safe, **kwargs)
            elif tracker_class.requires_logging_directory:
                tracker = tracker_class(safe, os.path.join(self.logging_dir, self.project_name), **kwargs)
            else:
                tracker = tracker_class(safe, **kwargs)
            tracker.start()
            tracker.store_init_configuration(flatten(config))
            self.trackers.append(tracker)
        logger.info("tracking with %s (run %s)", ", ".join(self.names), safe)

    def end(self) -> None:
        """Close every tracker (idempotent)."""
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []

    def __enter__(self) -> ExperimentTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    # ------------------------------------------------------------------ logging
    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar ``values`` (nested mappings are flattened to ``a/b`` names; non-numbers dropped)."""
        scalars = numeric(values)
        if scalars:
            for tracker in self.trackers:
                tracker.log(scalars, step=step)

    def log_timings(self, timings: Mapping[str, float], step: int | None = None) -> None:
        """Seconds per stage, as ``timings_s/<stage>``."""
        self.log({"timings_s": dict(timings)}, step)

    def log_metrics(self, quality: Mapping[str, Any], step: int | None = None) -> None:
        """Quality metrics (``metrics.json``'s ``quality``), as ``quality/...``."""
        self.log({"quality": dict(quality)}, step)

    def log_video(self, name: str, frames: np.ndarray, fps: float, step: int | None = None) -> None:
        """An edited video ``(F, H, W, 3)`` uint8: a W&B video, or ``video_frames`` frames as images."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"log_video expects (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        picks = np.unique(
            np.linspace(0, len(frames) - 1, min(self.video_frames, len(frames))).round().astype(int)
        )
        for tracker in self.trackers:
            if tracker.name == "wandb":
                import wandb

                video = wandb.Video(frames.transpose(0, 3, 1, 2), fps=max(1, round(fps)), format="mp4")
                tracker.log({name: video}, step=step)
            elif tracker.name == "tensorboard":
                tracker.log_images({name: frames[picks]}, step=step, dataformats="NHWC")
            elif hasattr(tracker, "log_images"):
                tracker.log_images({name: list(frames[picks])}, step=step)
            else:
                logger.debug("tracker %s logs no images: %s not logged", tracker.name, name)

    def log_run(self, metrics: Mapping[str, Any], videos: Mapping[str, np.ndarray], fps: float) -> None:
        """Everything of a finished run: quality metrics, timings, peak memory, and (``log_videos``) the
        edited videos as ``edit/<name>``."""
        self.log_metrics(metrics.get("quality") or {})
        self.log_timings(metrics.get("timings_s") or {})
        self.log({"peak_memory": metrics.get("peak_memory") or {}})
        if self.log_videos:
            for name, frames in videos.items():
                self.log_video(f"edit/{name}", frames, fps)


def log_finished_run(tracker: ExperimentTracker | None, cfg: Mapping[str, Any], result: Any) -> bool:
    """Log a finished :class:`~videoedit.edit.RunResult` of ``cfg`` (config, metrics, timings, memory,
    edits) and close the tracker. Nothing happens without a tracker, for a skipped run, or on processes
    other than the one that wrote the result tree. Returns whether the run was logged.

    The run's name is its folder relative to ``paths.output_root`` (``instance_edit/<run_id>``, or
    ``<experiment>/multirun/<run_id>/<job>`` in a sweep).
    """
    from pathlib import Path

    from omegaconf import DictConfig, OmegaConf

    if tracker is None or result.skipped or result.metrics.get("edits") is None:
        return False
    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    folder = Path(result.output_dir).resolve()
    try:
        name = folder.relative_to(Path(config["paths"]["output_root"]).resolve()).as_posix()
    except (KeyError, TypeError, ValueError):
        name = folder.name
    with tracker:
        tracker.start(config, run_name=name)
        tracker.log_run(
            result.metrics, result.edits, float(result.metrics.get("video", {}).get("fps") or 8.0)
        )
    return True
