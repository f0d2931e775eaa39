"""Hydra plumbing: where the configs are, the ``run_id`` resolver, and composing configs in code.

The configs live in the top-level ``configs/`` folder of the repository (the one source of truth). A
built wheel ships that folder as the package ``videoedit.configs`` (``pyproject.toml`` maps it), so:

* in a checkout (``pip install -e .``, or ``PYTHONPATH=<checkout>``) Hydra reads ``<checkout>/configs``;
* from an installed wheel it reads ``pkg://videoedit.configs``.

More config folders (your own experiments, data or method configs, laid out like ``configs/``) are
searched after the packaged ones: ``videoedit run --config-dir DIR ...`` (Hydra's ``-cd``), or
``hydra.searchpath=[file:///abs/DIR]`` as an override, or ``compose_config(..., config_dirs=[DIR])``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: the package the wheel ships ``configs/`` as
CONFIG_PACKAGE = "videoedit.configs"


def checkout_config_dir() -> Path | None:
    """``<checkout>/configs`` when this package runs from a source checkout, else ``None``.

    A checkout is recognised by ``configs/config.yaml`` and ``pyproject.toml`` next to the package
    folder (an installed wheel has neither in ``site-packages``).
    """
    root = Path(__file__).resolve().parents[1]
    if (root / "configs" / "config.yaml").is_file() and (root / "pyproject.toml").is_file():
        return root / "configs"
    return None


def config_dir() -> Path:
    """The folder holding ``config.yaml``: the checkout's ``configs/`` or the installed package's."""
    checkout = checkout_config_dir()
    if checkout is not None:
        return checkout
    from importlib.resources import files

    return Path(str(files(CONFIG_PACKAGE)))


def config_source() -> str:
    """The primary config location as Hydra takes it: an absolute folder (checkout) or
    ``pkg://videoedit.configs`` (installed wheel)."""
    checkout = checkout_config_dir()
    return str(checkout) if checkout is not None else f"pkg://{CONFIG_PACKAGE}"


CONFIG_DIR = config_dir()


def search_path_override(config_dirs: Sequence[str | Path]) -> list[str]:
    """``["hydra.searchpath=[file:///abs/a,...]"]`` adding ``config_dirs`` to Hydra's search path
    (``[]`` for none). Raises :class:`~videoedit.errors.ConfigError` for a folder that does not exist."""
    from videoedit.errors import ConfigError

    if not config_dirs:
        return []
    paths = []
    for d in config_dirs:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(
                f"Config folder {d} does not exist: give a folder laid out like configs/ "
                "(e.g. <dir>/experiment/my_edit.yaml, used as +experiment=my_edit)."
            )
        paths.append(f"file://{path}")
    return [f"hydra.searchpath=[{','.join(paths)}]"]


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


def compose_config(
    overrides: Sequence[str] = (),
    config_name: str = "config",
    config_dirs: Sequence[str | Path] = (),
) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style overrides.

    Args:
        overrides: as on the command line, e.g. ``["+experiment=instance_edit", "model=tiny"]``.
        config_name: the primary config.
        config_dirs: more config folders searched after the packaged ones (your own
            ``experiment/*.yaml``, ``data/*.yaml``...).
    """
    from hydra import compose, initialize_config_dir, initialize_config_module

    register_resolvers()
    extra = search_path_override(config_dirs)
    checkout = checkout_config_dir()
    init = (
        initialize_config_dir(config_dir=str(checkout), version_base="1.3")
        if checkout is not None
        else initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3")
    )
    with init:
        return compose(config_name=config_name, overrides=[*overrides, *extra])


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


def ensure_output_root(root: str | Path) -> Path:
    """Create the output root (``paths.output_root``) or raise a :class:`~videoedit.errors.ConfigError`
    naming the folder and how to choose another one (instead of a traceback from deep inside Hydra)."""
    from videoedit.errors import ConfigError

    path = Path(root).expanduser()
    how = (
        "Results go to paths.output_root (environment variable VIDEOEDIT_OUTPUT_ROOT, default ./outputs): "
        "set VIDEOEDIT_OUTPUT_ROOT=<a writable folder> or add paths.output_root=<folder> to the command."
    )
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"Cannot create the output folder {path}: {blocker} is a file, not a folder. {how}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"Cannot create the output folder {path} ({type(err).__name__}: {err.strerror or err}). {how}"
        ) from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"The output folder {path} is not writable. {how}")
    return path
