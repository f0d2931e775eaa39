#!/usr/bin/env python
"""Run an experiment: ``accelerate launch run.py +experiment=instance_edit [overrides...]``.

Also works as ``python run.py ...`` and with Hydra multirun (``-m method.guidance_scale=5,7.5``).
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from videoedit.config import hydra_overrides_for_rank, register_resolvers
from videoedit.edit import edit
from videoedit.errors import VideoEditError

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        result = edit(cfg, HydraConfig.get().runtime.output_dir)
    except VideoEditError as err:  # bad input: the message says what to do; no traceback needed
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.metrics.get("edits") is not None:
        print(f"Results written to {result.output_dir.resolve()}")


if __name__ == "__main__":
    sys.argv = hydra_overrides_for_rank(sys.argv)
    main()
