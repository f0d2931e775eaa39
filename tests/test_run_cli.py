"""The entry point as users run it: run.py under python, accelerate launch, Hydra multirun and torchrun."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import FAST, ROOT
from videoedit.io.result_tree import RunDirectory


def _run(args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {}), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _result_dir(stdout: str) -> Path:
    match = re.search(r"Results written to (\S+)", stdout)
    assert match, stdout[-2000:]
    return Path(match.group(1))


def test_accelerate_launch_quickstart(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    proc = _run(
        [accelerate, "launch", "--num_processes", "1", "run.py", "+experiment=instance_edit", *FAST],
        {"VIDEOEDIT_OUTPUT_ROOT": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _result_dir(proc.stdout)
    assert out.parent == tmp_path / "instance_edit"
    assert RunDirectory.is_complete(out) and (out / "sample" / "edit0_seed0.mp4").is_file()


def test_multirun_gives_one_tree_per_job(tmp_path):
    proc = _run(
        [sys.executable, "run.py", "-m", "+experiment=instance_edit", *FAST, "method.guidance_scale=5,7.5"],
        {"VIDEOEDIT_OUTPUT_ROOT": str(tmp_path), "VIDEOEDIT_CACHE_ROOT": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "instance_edit" / "multirun").glob("*/[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert all(RunDirectory.is_complete(j) for j in jobs)
    assert [m["method"]["guidance_scale"] for m in metrics] == [5.0, 7.5]
    assert [m["inversion"]["cache"] for m in metrics] == ["miss", "hit"]


def test_sd15_without_weights_fails_fast_and_says_what_to_do(tmp_path):
    start = time.perf_counter()
    proc = _run(
        [sys.executable, "run.py", "+experiment=instance_edit", "data=two_figures", "model=sd15"],
        {"VIDEOEDIT_OUTPUT_ROOT": str(tmp_path)},
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Could not load the Stable Diffusion weights")
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in proc.stderr and "model=tiny" in proc.stderr
    assert elapsed < 60  # python + torch imports dominate; no download retries
    assert not any(RunDirectory.is_complete(p) for p in tmp_path.rglob("*") if p.is_dir())


def test_two_ranks_split_the_edits_into_one_run_directory(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    proc = _run(
        # --standalone: a free rendezvous port (parallel test sessions must not collide on the default one)
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "run.py",
            *FAST,
            "prompts=[a,b,c]",
            "sample_seeds=[0]",
        ],
        {"VIDEOEDIT_OUTPUT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (tmp_path / "default").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # one run directory for both ranks
    run = runs[0]
    assert RunDirectory.is_complete(run)
    listing = json.loads((run / "sample" / "edits.json").read_text())
    assert [e["name"] for e in listing] == ["edit0_seed0", "edit1_seed0", "edit2_seed0"]
    log = proc.stdout + proc.stderr
    for name in ("edit0_seed0", "edit1_seed0", "edit2_seed0"):
        assert len(re.findall(rf"edit {name}: ", log)) == 1, name  # each edit computed exactly once
    assert "(process 1 of 2)" in log
