"""Weight-free mask propagation on DAVIS-2016 ground truth (region similarity J = mask IoU).

For each sequence of ``../shared/data/davis2016`` (the first 24 frames are stored), the first frame's
ground-truth mask is propagated and compared with the ground truth of every other frame, on three clips
built from those frames:

* ``24``: frames 0..23 as they are;
* ``fr47``: forward then reversed, 0..23, 22..0 (47 frames): drift shows as the object comes back;
* ``pp139``: three ping-pongs, 0..23..0..23..0..23..0 (139 frames, the length of a whole DAVIS sequence).

Methods: ``copy`` (the first mask on every frame, the baseline to beat), ``threshold`` and ``color`` (the
propagator's older modes: warp + threshold, warp + keyframe colour model, nearest-keyframe fusion) and
``adaptive`` (the default: occlusion-aware warp, global + local colour models, guided filter; see
``annotators/mask_refine.py``). ``box->grabcut`` starts from the ground truth's bounding box only
(GrabCut keyframe, no weights) then the default propagation (24 frames).

``--loo`` runs a small grid of the adaptive mode's main parameters and reports leave-one-out J: for each
sequence, the grid point that is best on the other five (mean of ``24`` and ``fr47``) scored on it.

``--runtime`` times ``propagate`` (flows included, no flow cache) on the 24 frames of each sequence at
854x480 on ONE thread (torch and OpenCV), per propagated frame. ``--two-man`` adds VideoGrain's two
joggers (``../shared/data/videograin/run_two_man``, 16 frames, one mask per man), never used for tuning.

    python benchmarks/bench_mask_propagation.py --runtime     # table + runtime
    python benchmarks/bench_mask_propagation.py --loo --no-table --out benchmarks/results/mask_propagation_loo.json
    python benchmarks/bench_mask_propagation.py --two-man --no-table --out benchmarks/results/mask_propagation_two_man.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotators.propagation import FlowMaskPropagator
from annotators.sam import grabcut_segment, mask_iou
from benchmarks.common import add_record_argument, machine, result_path, save

SEQUENCES = ("blackswan", "car-turn", "lucia", "dance-twirl", "car-shadow", "tennis")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016"
TWO_MAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "videograin" / "run_two_man"
CLIPS = ("24", "fr47", "pp139")
METHODS = {
    "threshold": {"refine": "threshold", "fusion": "nearest"},
    "color": {"refine": "color", "fusion": "nearest"},  # the default before 2026-12
    "adaptive": {},  # the default
}
GRID = {  # leave-one-out grid of the adaptive mode (the default is one of its points)
    "color_weight": (0.8, 1.2, 1.6),
    "anchor_min_confidence": (0.0, 0.9),
}


def load(seq: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack(
        [
            np.asarray(Image.open(DATA / "JPEGImages" / seq / f"{i:05d}.jpg").convert("RGB"))
            for i in range(frames)
        ]
    )
    gt = np.stack(
        [
            np.asarray(Image.open(DATA / "Annotations" / seq / f"{i:05d}.png").convert("L")) > 0
            for i in range(frames)
        ]
    )
    return images, gt


def clip_order(kind: str, n: int) -> list[int]:
    """Frame indices of a stress clip (see the module docstring)."""
    forward, back = list(range(n)), list(range(n - 2, -1, -1))
    if kind == "24":
        return forward
    if kind == "fr47":
        return forward + back
    if kind == "pp139":
        return forward + back + (list(range(1, n)) + back) * 2
    raise ValueError(f"unknown clip {kind!r}")


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean J over frames 1.. (frame 0 is the given keyframe)."""
    return float(np.mean([mask_iou(p, g) for p, g in zip(pred[1:], gt[1:])]))


def score(prop: FlowMaskPropagator, images: np.ndarray, gt: np.ndarray, kind: str) -> float:
    order = clip_order(kind, len(images))
    return region_j(prop.propagate(images[order], {0: gt[0]}), gt[order])


def runtime(frames: int) -> dict:
    """Seconds per propagated frame, flows included, one thread: wall time and the process's CPU time
    (on a shared machine the wall time includes waiting for a core; with one thread the CPU time is what
    a quiet machine's wall time would be)."""
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    out: dict = {"threads": 1, "size": "854x480", "load_average_start": os.getloadavg()}
    try:
        for name, kwargs in METHODS.items():
            wall, cpu = {}, {}
            for seq in SEQUENCES:
                images, gt = load(seq, frames)
                prop = FlowMaskPropagator(flow_backend="dis", **kwargs)
                start, start_cpu = time.perf_counter(), time.process_time()
                prop.propagate(images, {0: gt[0]})
                wall[seq] = (time.perf_counter() - start) / (frames - 1)
                cpu[seq] = (time.process_time() - start_cpu) / (frames - 1)
            out[name] = {
                "wall_s_per_frame": round(float(np.mean(list(wall.values()))), 3),
                "cpu_s_per_frame": round(float(np.mean(list(cpu.values()))), 3),
                "cpu_s_per_frame_by_sequence": {s: round(v, 3) for s, v in cpu.items()},
            }
            print("runtime", name, out[name], flush=True)
        # the adaptive mode's flows alone (both directions, at its flow scale)
        images, _ = load("car-shadow", frames)
        prop = FlowMaskPropagator(flow_backend="dis")
        start = time.process_time()
        prop._flows(images, "forward"), prop._flows(images, "backward")
        out["adaptive: its two flows alone, cpu_s_per_frame (car-shadow)"] = round(
            (time.process_time() - start) / (frames - 1), 3
        )
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    out["load_average_end"] = os.getloadavg()
    return out


def leave_one_out(frames: int, cache: str) -> dict:
    """Adaptive-mode grid: J per sequence and clip, and the leave-one-out pick for each sequence."""
    points = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    table: dict[str, dict[str, dict[str, float]]] = {}
    data = {seq: load(seq, frames) for seq in SEQUENCES}
    for point in points:
        name = ",".join(f"{k}={v}" for k, v in point.items())
        table[name] = {}
        for seq, (images, gt) in data.items():
            prop = FlowMaskPropagator(flow_backend="dis", flow_cache_root=cache, **point)
            table[name][seq] = {k: round(score(prop, images, gt, k), 3) for k in ("24", "fr47")}
        print("grid", name, table[name], flush=True)
    picks = {}
    for held in SEQUENCES:
        rest = [s for s in SEQUENCES if s != held]
        best = max(
            table, key=lambda n: np.mean([(table[n][s]["24"] + table[n][s]["fr47"]) / 2 for s in rest])
        )
        picks[held] = {"chosen on the other five": best, **table[best][held]}
    return {
        "grid": table,
        "picks": picks,
        "mean held-out J": {
            k: round(float(np.mean([p[k] for p in picks.values()])), 3) for k in ("24", "fr47")
        },
    }


def two_man() -> dict:
    """Held out from all tuning: VideoGrain's two joggers (16 frames, 512x512, one mask per man), each
    man propagated from frame 0 on the 16 frames and forward-then-reversed (31 frames)."""
    n = len(list((TWO_MAN / "run_two_man").glob("*.png")))
    images = np.stack(
        [np.asarray(Image.open(TWO_MAN / "run_two_man" / f"{i:05d}.png").convert("RGB")) for i in range(n)]
    )
    out: dict = {"frames": n, "size": "512x512"}
    for region in ("left_man", "right_man"):
        gt = np.stack(
            [
                np.asarray(Image.open(TWO_MAN / "layout_masks" / region / f"{i:05d}.png")) > 127
                for i in range(n)
            ]
        )
        row: dict = {}
        for kind, order in (("16", list(range(n))), ("fr31", list(range(n)) + list(range(n - 2, -1, -1)))):
            row[f"copy {kind}"] = region_j(np.repeat(gt[:1], len(order), axis=0), gt[order])
            for name, kwargs in METHODS.items():
                prop = FlowMaskPropagator(flow_backend="dis", **kwargs)
                row[f"{name} {kind}"] = region_j(prop.propagate(images[order], {0: gt[0]}), gt[order])
        out[region] = {k: round(v, 3) for k, v in row.items()}
        print("two_man", region, out[region], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--clips", default=",".join(CLIPS), help="comma-separated subset of 24,fr47,pp139")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of methods")
    parser.add_argument("--runtime", action="store_true", help="time every method on one thread")
    parser.add_argument("--loo", action="store_true", help="leave-one-out grid of the adaptive mode")
    parser.add_argument("--no-table", action="store_true", help="skip the per-method table")
    parser.add_argument(
        "--two-man", action="store_true", help="also the held-out VideoGrain two-joggers clip"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="default: mask_propagation_davis.json in benchmarks/runs (--record: results)",
    )
    add_record_argument(parser)
    args = parser.parse_args()
    clips = args.clips.split(",")
    methods = args.methods.split(",")
    for name in methods:
        if name not in METHODS:
            parser.error(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    results: dict = {
        "machine": {**machine(), "load_average_start": os.getloadavg()},
        "frames": args.frames,
        "size": "854x480 (native)",
        "clips": {k: f"{len(clip_order(k, args.frames))} frames" for k in clips},
        "flow": "OpenCV DIS (medium)",
        "sequences": {},
    }
    with tempfile.TemporaryDirectory() as cache:
        for seq in () if args.no_table else SEQUENCES:
            images, gt = load(seq, args.frames)
            row: dict = {}
            for kind in clips:
                order = clip_order(kind, args.frames)
                row[f"copy {kind}"] = region_j(np.repeat(gt[:1], len(order), axis=0), gt[order])
                for name in methods:
                    prop = FlowMaskPropagator(flow_backend="dis", flow_cache_root=cache, **METHODS[name])
                    row[f"{name} {kind}"] = score(prop, images, gt, kind)
            ys, xs = np.nonzero(gt[0])
            key = grabcut_segment(images[0], box=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            row["box keyframe J"] = mask_iou(key, gt[0])
            row["box->grabcut+adaptive 24"] = region_j(
                FlowMaskPropagator(flow_backend="dis", flow_cache_root=cache).propagate(images, {0: key}), gt
            )
            row = {k: round(v, 3) for k, v in row.items()}
            results["sequences"][seq] = row
            print(seq, row, flush=True)
        if results["sequences"]:
            names = list(next(iter(results["sequences"].values())))
            results["mean"] = {
                n: round(float(np.mean([r[n] for r in results["sequences"].values()])), 3) for n in names
            }
            results["beats copy on every sequence and clip"] = {
                name: all(
                    r[f"{name} {k}"] > r[f"copy {k}"] for r in results["sequences"].values() for k in clips
                )
                for name in methods
            }
        if args.loo:
            results["leave_one_out"] = leave_one_out(args.frames, cache)
    if args.two_man:
        results["two_man (held out)"] = two_man()
    if args.runtime:
        results["runtime"] = runtime(args.frames)
    results["machine"]["load_average_end"] = os.getloadavg()
    save(results, result_path("mask_propagation_davis.json", args.record, args.out))


if __name__ == "__main__":
    main()
