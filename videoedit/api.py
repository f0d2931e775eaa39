"""The Python API: compose a config and run an edit from a script or a notebook.

Two levels:

* :func:`edit_video` — one call from a clip and prompts to a finished result tree::

      import videoedit

      result = videoedit.edit_video(
          "clip.mp4",
          ["a watercolor painting of a man running"],
          method="videograin",
          overrides=["model=tiny", "data.num_frames=8"],      # any command-line override
          settings={"method.guidance_scale": 5.0},             # dotted keys -> Python values
      )
      result.output_dir          # outputs/<experiment>/<run_id>/ (the result tree)
      result.edits["edit0_seed0"]  # (F, H, W, 3) uint8
      result.metrics["quality"]

* :func:`videoedit.config.compose_config` + :func:`videoedit.edit.edit` — the same two steps the
  command line takes (``videoedit run`` composes with Hydra, then calls ``edit(cfg, output_dir)``)::

      cfg = videoedit.compose_config(["+experiment=instance_edit", "model=tiny", "data=two_figures"])
      cfg.method.guidance_scale = 5.0
      result = videoedit.edit(cfg, "outputs/my_run")

Prompts are Python values here, so no Hydra/shell quoting: an empty local prompt is ``""`` or ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videoedit.config import compose_config, ensure_output_root, run_id
from videoedit.errors import ConfigError, PromptError

PromptSpec = str | Sequence[str | None]


def _prompt_list(prompts: PromptSpec | Sequence[PromptSpec]) -> list[str | list[str]]:
    """``"p"`` -> ``["p"]``; ``["p", ["full", "local", None]]`` -> ``["p", ["full", "local", ""]]``."""
    if isinstance(prompts, str):
        return [prompts]
    out: list[str | list[str]] = []
    for item in prompts:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Sequence):
            out.append(["" if p is None else str(p) for p in item])
        else:
            raise PromptError(
                f"Each prompt must be a string or a list [full_prompt, local_1, ...], got {item!r}."
            )
    return out


def apply_settings(cfg: DictConfig, settings: Mapping[str, Any]) -> DictConfig:
    """Set dotted keys of ``cfg`` to Python values (``{"method.guidance_scale": 5.0}``), in place.

    Keys must exist (a typo raises :class:`ConfigError` naming it); to add a key, use an override
    ``+key=value`` in ``compose_config``.
    """
    for key, value in settings.items():
        try:
            OmegaConf.update(cfg, key, value, merge=False)  # the composed config is in struct mode
        except OmegaConfBaseException as err:
            raise ConfigError(
                f"Cannot set {key}={value!r}: {str(err).splitlines()[0]}. Check the key against the "
                "composed config (videoedit run ... --cfg job prints it), or add a new key with an "
                f"override '+{key}=...'."
            ) from err
    return cfg


def edit_video(
    video: str | Path | None = None,
    prompts: PromptSpec | Sequence[PromptSpec] | None = None,
    *,
    method: str | None = None,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    config_dirs: Sequence[str | Path] = (),
):
    """Edit a clip and write its result tree; returns :class:`videoedit.edit.RunResult`.

    Args:
        video: a video file (mp4, gif, webm...) or a folder of frames; selects ``data=video`` with
            ``data.path`` set to it (relative paths are taken from the current folder). ``None``:
            the data of the config (``experiment`` or ``overrides``).
        prompts: one prompt, or a list whose items are prompts or ``[full_prompt, local_1, ...]``
            (local prompts follow ``data.regions``; ``""``/``None`` = a region without a prompt).
            ``None``: the config's ``prompts``.
        method: a ``configs/method`` name (``videograin``, ``tokenflow``, ``ddim``...).
        experiment: a ``configs/experiment`` name (``+experiment=<name>``).
        overrides: more command-line style overrides, applied after ``method``/``experiment``/
            ``video`` (e.g. ``["model=tiny", "data.num_frames=8"]``).
        settings: dotted keys set to Python values after composing (no quoting:
            ``{"data.regions": ["man", "bg"], "method.guidance_scale": 5.0}``).
        output_dir: the run folder (default ``<paths.output_root>/<experiment_name>/<run_id>``).
        config_dirs: your own config folders, searched after the packaged ones.

    Raises:
        VideoEditError: bad input, with a message saying what to do (before any model loads).
    """
    from videoedit.edit import edit
    from videoedit.tracking import ExperimentTracker, log_finished_run

    composed: list[str] = []
    if experiment:
        composed.append(f"+experiment={experiment}")
    if method:
        composed.append(f"method={method}")
    if video is not None:
        composed.append("data=video")
    cfg = compose_config([*composed, *overrides], config_dirs=config_dirs)
    values: dict[str, Any] = {}
    if video is not None:
        values["data.path"] = str(Path(video).expanduser().absolute())
    if prompts is not None:
        values["prompts"] = _prompt_list(prompts)
    apply_settings(cfg, {**values, **dict(settings or {})})
    if output_dir is None:
        root = ensure_output_root(cfg.paths.output_root)
        output_dir = root / str(cfg.experiment_name) / run_id()
    else:
        ensure_output_root(Path(output_dir).parent)
    tracker = ExperimentTracker.from_config(cfg.get("tracking"))  # +tracking=...: checked before the run
    result = edit(cfg, output_dir)
    log_finished_run(tracker, cfg, result)
    return result
