"""The Hydra entry point behind ``run.py``, ``videoedit run`` and ``python -m videoedit.run``.

All three take the same arguments (Hydra overrides and flags) and do the same thing::

    videoedit run +experiment=instance_edit model=tiny data=two_figures
    videoedit run -m +experiment=instance_edit model=tiny data=two_figures method.guidance_scale=5,7.5
    accelerate launch -m videoedit run +experiment=instance_edit          # several processes, no checkout
    accelerate launch run.py +experiment=instance_edit                    # from a checkout
    videoedit run --config-dir my_configs +experiment=my_edit             # your own configs on top

A run folder that already holds a finished run of the same config is skipped (``force=true`` redoes it):
re-running an interrupted sweep into its folder resumes it (see ``videoedit/sweeps.py``). Bad input stops
with ``error: <what to do>`` on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from videoedit.config import (
    config_source,
    ensure_output_root,
    hydra_overrides_for_rank,
    register_resolvers,
)
from videoedit.errors import VideoEditError

logger = logging.getLogger(__name__)


def _task(cfg: DictConfig) -> None:
    """One Hydra job: ``edit(cfg, <Hydra's run folder>)``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from videoedit.edit import edit
    from videoedit.sweeps import job_owner, launch_rank, record_overrides, runs_jobs_alone
    from videoedit.tracking import ExperimentTracker, log_finished_run

    hydra_cfg = HydraConfig.get()
    try:
        tracker = ExperimentTracker.from_config(cfg.get("tracking"))  # +tracking=...: checked before the run
        alone = False  # sweep_split=jobs under accelerate/torchrun: this process runs whole jobs alone
        if hydra_cfg.mode == RunMode.MULTIRUN and runs_jobs_alone(cfg):
            rank, world = launch_rank()
            if job_owner(hydra_cfg.job.num, world) != rank:
                return  # another process of the launch runs this job
            print(f"sweep job {hydra_cfg.job.num}: process {rank} of {world}")
            record_overrides(hydra_cfg.runtime.output_dir, hydra_cfg.overrides.task)
            alone = True
        result = edit(cfg, hydra_cfg.runtime.output_dir, alone=alone)
        log_finished_run(tracker, cfg, result)
    except VideoEditError as err:  # bad input: the message says what to do; no traceback needed
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.skipped:  # resume: the folder already holds a finished run of this config
        print(f"Already complete, skipped (force=true to redo): {result.output_dir.resolve()}")
    elif result.metrics.get("edits") is not None:
        print(f"Results written to {result.output_dir.resolve()}")


def output_root_of(argv: Sequence[str]) -> str | None:
    """``paths.output_root`` of the config these command-line arguments select (``None`` if it cannot
    be composed: Hydra's own run then reports why). Sweep overrides are left out (they cannot be
    composed one by one)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from videoedit.config import compose_config

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
        if args.help or args.hydra_help or args.info or args.shell_completion:
            return None
        parsed = OverridesParser.create().parse_overrides(args.overrides)
        plain = [o.input_line for o in parsed if not o.is_sweep_override()]
        cfg = compose_config(
            plain, args.config_name or "config", [args.config_dir] if args.config_dir else ()
        )
        return str(cfg.paths.output_root)
    except Exception as err:  # any composition problem is Hydra's to report, with its own message
        logger.debug("could not compose the config to check the output root: %s", err)
        return None


def main(argv: Sequence[str] | None = None, prog: str = "videoedit run") -> None:
    """Run Hydra with ``argv`` (default ``sys.argv[1:]``) on the packaged configs, then exit.

    Before Hydra creates the run folder, the output root is created (or the run stops with a message
    naming it and ``VIDEOEDIT_OUTPUT_ROOT`` / ``paths.output_root``).
    """
    import hydra

    argv = list(sys.argv[1:] if argv is None else argv)
    register_resolvers()
    root = output_root_of(argv)
    if root is not None:
        try:
            ensure_output_root(root)
        except VideoEditError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [prog, *hydra_overrides_for_rank(argv)]
    hydra.main(version_base="1.3", config_path=config_source(), config_name="config")(_task)()


if __name__ == "__main__":
    main(prog="python -m videoedit.run")
