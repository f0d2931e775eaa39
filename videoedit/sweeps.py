"""Sweeps: resuming finished jobs, and splitting a sweep's jobs across the processes of a launch.

**Resume.** A run folder that already holds a finished run of the same config is skipped
(``force=true`` recomputes it). A run is finished when its ``COMPLETE`` marker exists (written last by
``edit()``) and every file its ``MANIFEST.json`` lists is there with its recorded size and SHA-256
(:meth:`RunDirectory.verify`); a job whose files are missing or changed is run again, not skipped. Run
folders are named by the launch's ``run_id`` (a timestamp), so resuming an interrupted sweep means
running the same sweep again **into the same folder**::

    VIDEOEDIT_RUN_ID=<run_id of the interrupted sweep> python run.py -m <the same overrides>
    python run.py -m <the same overrides> hydra.sweep.dir=outputs/<experiment>/multirun/<run_id>

Jobs are numbered in the order Hydra expands the sweep, so keep the overrides (and their order) the
same. As a guard, a finished folder whose recorded ``config.yaml`` differs from the job's config is an
error, not a skip: a changed sweep never passes off old results as new ones. A setting present on one
side only counts (``+data.conditions.openpose=...`` added or dropped), except a setting the recorded
config lacks whose value is its constructor default (a code update that added an option). Moving the
output/cache/data roots, and settings that do not change the edits (``force``, ``metrics``,
``progress_bar``, ``sweep_split``, ``cache_*``), do not count.

The quality metrics are not part of that comparison, but a skipped run's ``metrics.json`` must not mix
metric settings across a sweep: when its recorded ``quality.settings`` (flow backend, CLIP model,
occlusion check, max PSNR) differ from the job's ``metrics`` block, the metrics are recomputed from the
result tree (``videoedit.metrics.evaluate.evaluate_run``) and ``metrics.json`` is rewritten.

**Several processes** (``accelerate launch --num_processes N run.py -m ...`` or ``torchrun``): every
process runs Hydra's sweep loop. With ``sweep_split=edits`` (default) every job is shared by all
processes, which split its edits (prompts x seeds); with ``sweep_split=jobs`` job ``i`` runs whole on
process ``i % N`` (its own GPU) and the others skip it: the better choice when jobs have fewer edits
than there are GPUs. Either way each job folder is written by one process only.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from videoedit.errors import ConfigError
from videoedit.io.atomic import write_text
from videoedit.io.result_tree import RunDirectory

logger = logging.getLogger(__name__)

# config keys that do not change a run's results: a finished run is reused whatever their values
IGNORED_KEYS = (
    "force",
    "progress_bar",
    "metrics",
    "sweep_split",
    "paths",
    "cache_inversion",
    "cache_annotations",
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        if not node and prefix:  # an empty mapping is a value ({}), not nothing
            return {prefix[:-1]: {}}
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _comparable(container: dict[str, Any]) -> dict[str, Any]:
    """Flat ``{key: value}`` without :data:`IGNORED_KEYS`, with the config's own ``paths.*`` roots written
    as ``${paths.<name>}`` inside values: moving the output, cache or data root is not another config."""
    roots = sorted(
        (
            (f"${{paths.{k}}}", str(v))
            for k, v in (container.get("paths") or {}).items()
            if isinstance(v, str) and v
        ),
        key=lambda item: -len(item[1]),
    )
    out = {}
    for key, value in _flatten(container).items():
        if key.split(".")[0] in IGNORED_KEYS:
            continue
        if isinstance(value, str):
            for token, root in roots:
                if value == root or value.startswith(root.rstrip("/") + "/"):
                    value = token + value[len(root.rstrip("/")) :]
                    break
        out[key] = value
    return out


_ABSENT = object()


def _constructor_default(container: dict[str, Any], key: str) -> Any:
    """The default of the constructor argument ``key`` names (``method.foo``: argument ``foo`` of the
    ``method`` node's ``_target_``), or ``_ABSENT`` when ``key`` is not such an argument."""
    node_path, _, arg = key.rpartition(".")
    node: Any = container
    for part in node_path.split(".") if node_path else ():
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
        return _ABSENT
    try:
        from hydra.utils import get_class

        parameter = inspect.signature(get_class(node["_target_"])).parameters.get(arg)
    except Exception:  # not importable / not a class: no default known
        return _ABSENT
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return _ABSENT
    return parameter.default


def config_differences(cfg: DictConfig, recorded: str | Path) -> list[str]:
    """``key: old -> new`` for every key (outside :data:`IGNORED_KEYS`) whose value differs between the
    resolved ``cfg`` and a recorded ``config.yaml``. A key only one of them has is a difference
    (``<absent>``), except a key the recorded config lacks whose new value is the default of the
    constructor argument it sets: a code update that adds an option does not invalidate finished runs."""
    new_container = OmegaConf.to_container(cfg, resolve=True)
    new = _comparable(new_container)
    old = _comparable(OmegaConf.to_container(OmegaConf.load(recorded), resolve=True))
    out = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before is _ABSENT and _constructor_default(new_container, key) == after:
            continue
        if before != after:
            shown = ["<absent>" if v is _ABSENT else repr(v) for v in (before, after)]
            out.append(f"{key}: {shown[0]} -> {shown[1]}")
    return out


def refresh_quality(cfg: DictConfig, run: RunDirectory, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` of a finished run, with its quality metrics recomputed (and ``metrics.json``
    rewritten) when they were computed with other settings than ``cfg.metrics``.

    Raises:
        ConfigError: the ``metrics`` block is invalid (see :meth:`Evaluator.check`).
    """
    from videoedit.metrics.evaluate import Evaluator, evaluate_run

    evaluator = Evaluator.from_config(cfg.get("metrics"))
    differences = evaluator.differences(metrics.get("quality"))
    if not differences:
        return metrics
    evaluator.check()
    logger.info(
        "recomputing the quality metrics of %s (metric settings changed: %s)",
        run.root,
        "; ".join(differences),
    )
    metrics = dict(metrics)
    metrics["quality"] = evaluate_run(run.root, evaluator, write=True)
    return metrics


def finished_run(cfg: DictConfig, output_dir: str | Path, refresh: bool = True) -> dict[str, Any] | None:
    """The ``metrics.json`` of a finished run of this config in ``output_dir``, or ``None`` to run (no
    finished run there, or one whose files do not match its manifest: it is run again).

    With ``refresh`` (the one process that writes), quality metrics computed with other metric settings
    than ``cfg.metrics`` are recomputed first (:func:`refresh_quality`).

    Raises:
        ConfigError: ``output_dir`` holds a finished run of a *different* config.
    """
    run = RunDirectory(output_dir)
    if not RunDirectory.is_complete(run.root):
        return None
    if not run.config_path.is_file() or not run.metrics_path.is_file():
        return None  # not one of our finished runs: run again
    differences = config_differences(cfg, run.config_path)
    if differences:
        shown = "; ".join(differences[:5]) + (
            f"; ... ({len(differences)} in all)" if len(differences) > 5 else ""
        )
        raise ConfigError(
            f"{run.root} already holds a finished run of another config ({shown}). Use force=true to "
            "overwrite it, or run into a new folder (a new VIDEOEDIT_RUN_ID / hydra.sweep.dir)."
        )
    problems = run.verify()
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} in all)" if len(problems) > 3 else "")
        logger.warning(
            "%s is marked complete but its files do not match its manifest (%s): running it again",
            run.root,
            shown,
        )
        return None
    metrics = json.loads(run.metrics_path.read_text(encoding="utf-8"))
    return refresh_quality(cfg, run, metrics) if refresh else metrics


SWEEP_SPLITS = ("edits", "jobs")


def launch_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process in a multi-process launch (``(0, 1)`` otherwise)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def job_owner(job_num: int, world_size: int) -> int:
    """The process that runs sweep job ``job_num`` with ``sweep_split=jobs``: round robin."""
    return job_num % max(1, world_size)


def runs_jobs_alone(cfg: DictConfig) -> bool:
    """Whether this process runs whole sweep jobs alone: ``sweep_split=jobs`` under a multi-process launch."""
    split = str(cfg.get("sweep_split", "edits"))
    if split not in SWEEP_SPLITS:
        raise ConfigError(f"sweep_split must be one of {list(SWEEP_SPLITS)}, got {split!r}.")
    return split == "jobs" and launch_rank()[1] > 1


def record_overrides(output_dir: str | Path, overrides: Sequence[str]) -> None:
    """Write ``<job>/.hydra/overrides.yaml`` when Hydra did not (processes > 0 write no Hydra files), so
    that reports see the swept values of every job."""
    path = Path(output_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        write_text(path, OmegaConf.to_yaml(OmegaConf.create(list(overrides))))


def local_device() -> torch.device:
    """The device of a process that runs a whole job alone: its own GPU (``LOCAL_RANK``) or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


class SingleProcess:
    """Stands in for accelerate's ``PartialState`` when this process runs a job alone (``sweep_split=jobs``):
    no process group, no collectives; the main (and only) process of the job."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or local_device()
        if self.device.type == "cuda":  # this process's GPU (LOCAL_RANK), also for code using "cuda"
            torch.cuda.set_device(self.device)

    def wait_for_everyone(self) -> None:
        return None

    def main_process_first(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()
