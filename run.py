#!/usr/bin/env python
"""Run an experiment: ``accelerate launch run.py +experiment=instance_edit [overrides...]``.

A thin wrapper around :func:`videoedit.run.main`, the same entry point as ``videoedit run`` (installed
with the package): ``python run.py ...``, Hydra multirun (``-m method.guidance_scale=5,7.5``),
``accelerate launch``/``torchrun``, and ``--config-dir DIR`` for your own configs all work the same way.
"""

from videoedit.run import main

if __name__ == "__main__":
    main(prog="run.py")
