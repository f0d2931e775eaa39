"""Time and peak memory of keyframe-edit-then-propagate vs the clip length, at a fixed number of keyframes.

    python benchmarks/bench_keyframe_propagate.py --frames 24 48 96 --keyframes 4

Each (mode, length) runs in its own process (so its peak RSS is its own) on the tiny model, CPU, one
thread, on the generated two-figures clip with its OpenPose maps. Modes:

* ``keyframe``: ``method=keyframe_propagate`` with plain DDIM on K keyframes (invert + edit K frames),
  then flow (DIS) + propagation, no refinement;
* ``keyframe+refine``: the same plus the refinement pass (strength 0.2 of 20 steps = 4 steps over every
  in-between frame, 8 frames per UNet call);
* ``ddim``: the baseline, inverting and editing every frame (all frames in one UNet batch).

Reported per run: seconds per stage (flow, inversion, keyframe edit, propagation, refinement, total) and
``peak_rss_mib`` (the process's peak resident memory) minus ``base_rss_mib`` (after building the model),
i.e. the memory the edit itself needed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, result_path  # noqa: E402


def worker(mode: str, frames: int, keyframes: int, size: int, steps: int) -> dict:
    import psutil
    import torch
    from common import peak_rss_mib

    from videoedit.data.synthetic import TwoFiguresClip
    from videoedit.methods.base import EditRequest
    from videoedit.methods.ddim import DDIMMethod
    from videoedit.methods.keyframe_propagate import KeyframePropagateMethod
    from videoedit.models.tiny import build_tiny_components

    torch.set_num_threads(1)
    torch.manual_seed(0)
    components = build_tiny_components(seed=0, controlnet="tiny")
    source = TwoFiguresClip(num_frames=frames, height=size, width=size).load()
    control = source.conditions["openpose"]
    ddim = DDIMMethod(num_inference_steps=steps)
    if mode == "ddim":
        method = ddim
    else:
        refine = {"strength": 0.2, "num_inference_steps": 20} if mode == "keyframe+refine" else None
        method = KeyframePropagateMethod(
            ddim, num_keyframes=keyframes, flow={"backend": "dis"}, refine=refine
        )
    pipe = method.build_pipeline(components)
    pipe.set_progress_bar_config(disable=True)
    base_rss = psutil.Process().memory_info().rss / 2**20
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if mode != "ddim":
        t = time.perf_counter()
        method.source_flows(source)
        seconds["flow"] = time.perf_counter() - t
    t = time.perf_counter()
    inversion = method.invert(pipe, source, control, 1.0, None, "tiny")
    seconds["inversion"] = time.perf_counter() - t
    request = EditRequest(0, "two astronauts jogging on the moon", seed=0)
    t = time.perf_counter()
    result = method.edit(pipe, source, inversion, request, control, 1.0, torch.Generator().manual_seed(0))
    seconds["edit"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    for stage, value in result.info.get("stage_seconds", {}).items():
        seconds[f"edit/{stage}"] = value
    assert result.frames.shape[0] == frames
    return {
        "mode": mode,
        "frames": frames,
        "keyframes": keyframes if mode != "ddim" else frames,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "base_rss_mib": round(base_rss, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "edit_peak_mib": round(peak_rss_mib() - base_rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[24, 48, 96])
    parser.add_argument("--keyframes", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["keyframe", "keyframe+refine", "ddim"])
    parser.add_argument(
        "--out",
        default=None,
        help="default: keyframe_propagate_tiny.json in benchmarks/runs (--record: results)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "FRAMES"), help=argparse.SUPPRESS)
    add_record_argument(parser)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.keyframes, args.size, args.steps)))
        return
    from common import machine, save

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    results = {
        "config": {k: v for k, v in vars(args).items() if k != "worker"},
        "machine": machine(),
        "runs": [],
    }
    results["machine"]["threads"] = 1
    results["machine"]["load_average_before"] = os.getloadavg()
    for frames in args.frames:
        for mode in args.modes:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                mode,
                str(frames),
                "--keyframes",
                str(args.keyframes),
                "--size",
                str(args.size),
                "--steps",
                str(args.steps),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{mode} x {frames} failed:\n{proc.stderr[-3000:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run["load_average"] = os.getloadavg()
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    save(results, result_path("keyframe_propagate_tiny.json", args.record, args.out))


if __name__ == "__main__":
    main()
