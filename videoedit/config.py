"""Hydra plumbing: the config folder, the ``run_id`` resolver, and composing configs in code."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(seconds)) + f"-{int(seconds * 1000) % 1000:03d}"


def distributed_launch() -> bool:
    """Whether this process is one rank of a multi-process launch (accelerate launch / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def run_id() -> str:
    """The run folder name: ``VIDEOEDIT_RUN_ID`` if set, else a timestamp shared by all ranks of a launch.

    Under ``accelerate launch``/``torchrun`` every rank resolves the config itself; a plain ``now``
    would give each rank its own folder. All local ranks share their launcher process, so its start
    time names the run for all of them. Multi-node launches must set ``VIDEOEDIT_RUN_ID``.
    """
    explicit = os.environ.get("VIDEOEDIT_RUN_ID")
    if explicit:
        return explicit
    if distributed_launch():
        import psutil

        return _timestamp(psutil.Process(os.getppid()).create_time())
    return _timestamp(time.time())


def register_resolvers() -> None:
    """Register ``${run_id:}`` (cached per config, like Hydra's ``now``)."""
    OmegaConf.register_new_resolver("run_id", run_id, use_cache=True, replace=True)


def hydra_overrides_for_rank(argv: Sequence[str]) -> list[str]:
    """Extra overrides for ranks > 0 of a multi-process launch: no Hydra files in the shared run folder."""
    if distributed_launch() and int(os.environ.get("RANK", "0")) > 0:
        return [*argv, "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return list(argv)


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style overrides (for tests and scripts)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _model_target(folder: Path, name: str, seen: frozenset[str] = frozenset()) -> str | None:
    """The ``_target_`` of ``model/<name>.yaml``, following its defaults list to sibling files."""
    import yaml

    path = folder / f"{name}.yaml"
    if name in seen or not path.is_file():
        return None
    node = yaml.safe_load(path.read_text()) or {}
    if node.get("_target_"):
        return str(node["_target_"])
    for entry in node.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            target = _model_target(folder, entry, seen | {name})
            if target:
                return target
    return None


@lru_cache(maxsize=1)
def model_configs_by_family() -> dict[str, list[str]]:
    """``{backbone family: [model config names]}`` from ``configs/model/`` (for error messages)."""
    from hydra.utils import get_class

    folder = CONFIG_DIR / "model"
    out: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        target = _model_target(folder, path.stem)
        try:
            family = getattr(get_class(target), "family", "") if target else ""
        except Exception:  # a config whose target does not import is reported when it is used
            family = ""
        if family:
            out.setdefault(family, []).append(path.stem)
    return out
