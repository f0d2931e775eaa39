"""One real 2-job sweep with the tiny model, run once per test session and shared by the sweep, report
and metrics tests (read-only: copy it before changing it).

Jobs: ``method.guidance_scale=5,7.5``, each with two edits (``sample_seeds=[0,1]``), launched by our
``hydra/launcher=parallel`` config (joblib, two worker processes). The edit has two local prompts for
three regions, so the third region (the background, ``trees``) counts as preserved.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

# smaller than conftest.FAST: 3 frames at 64 px, 2 steps (the sweep runs in subprocesses)
TINY = [
    "model=tiny",
    "data=two_figures",
    "data.num_frames=3",
    "data.height=64",
    "data.width=64",
    "method.num_inference_steps=2",
    "progress_bar=false",
    "metrics.clip_model=null",
    "experiment_name=tiny_sweep",
    "prompts=[[two astronauts jogging on the moon,astronauts,astronauts]]",
    "sample_seeds=[0,1]",
]
SWEPT = ["method.guidance_scale=5,7.5"]


@dataclass(frozen=True)
class Sweep:
    folder: Path  # <output_root>/tiny_sweep/multirun/<run_id>
    output: str  # stdout + stderr of the sweep command
    env: dict[str, str]


_CACHE: dict[str, Sweep] = {}


def run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def sweep_env(base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "VIDEOEDIT_OUTPUT_ROOT": str(base / "outputs"),
        "VIDEOEDIT_CACHE_ROOT": str(base / "cache"),
        "VIDEOEDIT_RUN_ID": "sweep0",
    }


def tiny_sweep(base: Path) -> Sweep:
    """Run the sweep into ``base`` (once per session; later calls return the first result)."""
    if "sweep" not in _CACHE:
        env = sweep_env(base)
        args = [sys.executable, "run.py", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]
        proc = run([*args, *TINY, *SWEPT], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        folder = base / "outputs" / "tiny_sweep" / "multirun" / "sweep0"
        _CACHE["sweep"] = Sweep(folder, proc.stdout + proc.stderr, env)
    return _CACHE["sweep"]
