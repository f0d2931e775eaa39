"""How well flow propagation reproduces real in-between frames (``method=keyframe_propagate``'s core).

    python benchmarks/bench_propagation_error.py            # ../shared/data clips + DAVIS frames

For every clip (the first 25 frames (truck: its 21) of each ``../shared/data/clips/*.mp4``, the 24 DAVIS-2016 frames of
each sequence in ``../shared/data/davis2016/JPEGImages``), resized to a height of 256 px (aspect kept),
the **source frames themselves** are propagated from K keyframes (``even`` or ``motion`` selection) to
every other frame, and the mean absolute error (0..255, over all in-between pixels and channels) against
the true in-between frames is reported. Variants: ``copy`` (nearest keyframe, no motion), ``crossfade``
(linear blend of the two keyframes, no motion), ``flow`` (warped keyframes, temporal weights only),
``flow+occ`` (plus the forward-backward occlusion test), ``flow+occ+photo`` (plus the photometric
weight, sigma 10: the method's default). Flow: OpenCV DIS ``medium`` (no RAFT weights on this machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, machine, result_path, save

from videoedit.io.video import FrameSampling, read_video
from videoedit.motion import DISFlow, video_flows
from videoedit.pipelines.pipeline_keyframe import (
    copy_nearest_keyframe,
    motion_per_step,
    propagate_keyframes,
    select_keyframes,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VARIANTS = {
    "flow": {"occlusion_check": False},
    "flow+occ": {"occlusion_check": True},
    "flow+occ+photo": {"occlusion_check": True, "photometric_sigma": 10.0},
}


def load_clips(num_frames: int, height: int) -> dict[str, np.ndarray]:
    """``{name: (F, H, W, 3) uint8}`` resized to ``height`` (width keeps the aspect, even)."""
    clips = {}
    for path in sorted((SHARED / "clips").glob("*.mp4")):
        clips[path.stem] = read_video(path, FrameSampling(0, None, 1)).frames[:num_frames]
    for folder in sorted((SHARED / "davis2016" / "JPEGImages").glob("*")):
        files = sorted(folder.glob("*.jpg"))[:num_frames]
        clips[f"davis/{folder.name}"] = np.stack(
            [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
        )
    out = {}
    for name, frames in clips.items():
        h, w = frames.shape[1:3]
        size = (2 * round(w * height / h / 2), height)
        out[name] = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return out


def mae(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((a - b).abs().mean()) * 127.5, 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--keyframes", type=int, nargs="+", default=[7, 4])
    parser.add_argument("--out", default=None, help="default: propagation_error.json in benchmarks/runs")
    add_record_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"config": vars(args), "machine": machine(), "clips": {}}
    estimator = DISFlow("medium")
    for name, clip in load_clips(args.frames, args.height).items():
        start = time.perf_counter()
        source = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 127.5 - 1
        forward = video_flows(clip, estimator, "forward")
        backward = video_flows(clip, estimator, "backward")
        flow_seconds = time.perf_counter() - start
        num_frames = len(clip)
        entry = {"frames": num_frames, "size": list(clip.shape[1:3]), "flow_seconds": round(flow_seconds, 2)}
        for k in args.keyframes:
            for selection in ("even", "motion"):
                keys = select_keyframes(num_frames, k, selection, motion_per_step(forward))
                between = [t for t in range(num_frames) if t not in keys]
                row = {"keyframes": keys}
                row["copy"] = mae(
                    copy_nearest_keyframe(source[keys], keys, num_frames)[between], source[between]
                )
                fade = propagate_keyframes(
                    source[keys],
                    keys,
                    torch.zeros_like(forward),
                    torch.zeros_like(backward),
                    occlusion_check=False,
                )
                row["crossfade"] = mae(fade.frames[between], source[between])
                for variant, kwargs in VARIANTS.items():
                    out = propagate_keyframes(source[keys], keys, forward, backward, source=source, **kwargs)
                    row[variant] = mae(out.frames[between], source[between])
                entry[f"K{k}_{selection}"] = row
        results["clips"][name] = entry
        print(name, {k: v for k, v in entry.items() if k.startswith("K")}, flush=True)
    summary = {}
    for key in next(iter(results["clips"].values())):
        if not key.startswith("K"):
            continue
        summary[key] = {
            v: round(float(np.mean([c[key][v] for c in results["clips"].values()])), 3)
            for v in ("copy", "crossfade", *VARIANTS)
        }
    results["mean_over_clips"] = summary
    save(results, result_path("propagation_error.json", args.record, args.out))


if __name__ == "__main__":
    main()
