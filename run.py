#!/usr/bin/env python
"""Run an experiment: ``accelerate launch run.py +experiment=instance_edit [overrides...]``.

Also works as ``python run.py ...`` and with Hydra multirun (``-m method.guidance_scale=5,7.5``).
A run folder that already holds a finished run of the same config is skipped (``force=true`` redoes it):
re-running an interrupted sweep into its folder resumes it (see ``videoedit/sweeps.py``).
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from videoedit.config import hydra_overrides_for_rank, register_resolvers
from videoedit.edit import edit
from videoedit.errors import VideoEditError
from videoedit.sweeps import job_owner, launch_rank, record_overrides, runs_jobs_alone

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        alone = False  # sweep_split=jobs under accelerate/torchrun: this process runs whole jobs alone
        if hydra_cfg.mode == RunMode.MULTIRUN and runs_jobs_alone(cfg):
            rank, world = launch_rank()
            if job_owner(hydra_cfg.job.num, world) != rank:
                return  # another process of the launch runs this job
            print(f"sweep job {hydra_cfg.job.num}: process {rank} of {world}")
            record_overrides(hydra_cfg.runtime.output_dir, hydra_cfg.overrides.task)
            alone = True
        result = edit(cfg, hydra_cfg.runtime.output_dir, alone=alone)
    except VideoEditError as err:  # bad input: the message says what to do; no traceback needed
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.skipped:  # resume: the folder already holds a finished run of this config
        print(f"Already complete, skipped (force=true to redo): {result.output_dir.resolve()}")
    elif result.metrics.get("edits") is not None:
        print(f"Results written to {result.output_dir.resolve()}")


if __name__ == "__main__":
    sys.argv = hydra_overrides_for_rank(sys.argv)
    main()
