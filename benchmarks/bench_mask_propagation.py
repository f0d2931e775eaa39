"""Weight-free mask propagation on DAVIS-2016 ground truth (region similarity J = mask IoU).

For each sequence of ``../shared/data/davis2016`` (24 frames), the first frame's ground-truth mask is
propagated to frames 1..23 and compared with their ground truth:

* ``copy``: the first mask copied to every frame (the baseline to beat);
* ``flow+threshold``: DIS optical flow, backward warp, threshold 0.5;
* ``flow+color``: the default (:class:`annotators.propagation.FlowMaskPropagator`, colour-refined);
* ``box->grabcut+color``: end to end from a box only (the ground truth's bounding box, as a user would
  drag it): GrabCut keyframe (no weights) then the default propagation. Its keyframe J is reported too.

    python benchmarks/bench_mask_propagation.py            # all 6 sequences, native 854x480
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotators.propagation import FlowMaskPropagator
from annotators.sam import grabcut_segment, mask_iou
from benchmarks.common import add_record_argument, machine, result_path, save
from videoedit.motion import DISFlow

SEQUENCES = ("blackswan", "car-turn", "lucia", "dance-twirl", "car-shadow", "tennis")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016"


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


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean J over frames 1.. (frame 0 is the given keyframe)."""
    return float(np.mean([mask_iou(p, g) for p, g in zip(pred[1:], gt[1:])]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument(
        "--out",
        default=None,
        help="default: mask_propagation_davis.json in benchmarks/runs (--record: results)",
    )
    add_record_argument(parser)
    args = parser.parse_args()
    results: dict = {
        "machine": {**machine(), "load_average_start": os.getloadavg()},
        "frames": args.frames,
        "size": "854x480 (native)",
        "sequences": {},
    }
    for seq in SEQUENCES:
        images, gt = load(seq, args.frames)
        row: dict = {"copy": region_j(np.repeat(gt[:1], len(gt), axis=0), gt)}
        for name, refine in (("flow+threshold", "threshold"), ("flow+color", "color")):
            prop = FlowMaskPropagator(flow_backend="dis", refine=refine)
            assert isinstance(prop.flow, DISFlow)
            start = time.perf_counter()
            row[name] = region_j(prop.propagate(images, {0: gt[0]}), gt)
            row[f"{name} s"] = round(time.perf_counter() - start, 2)
        ys, xs = np.nonzero(gt[0])
        key = grabcut_segment(images[0], box=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        row["box keyframe J"] = mask_iou(key, gt[0])
        row["box->grabcut+color"] = region_j(
            FlowMaskPropagator(flow_backend="dis").propagate(images, {0: key}), gt
        )
        row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
        results["sequences"][seq] = row
        print(seq, row, flush=True)
    names = ("copy", "flow+threshold", "flow+color", "box keyframe J", "box->grabcut+color")
    results["mean"] = {
        n: round(float(np.mean([r[n] for r in results["sequences"].values()])), 3) for n in names
    }
    results["flow+color beats copy on every sequence"] = all(
        r["flow+color"] > r["copy"] for r in results["sequences"].values()
    )
    results["machine"]["load_average_end"] = os.getloadavg()
    save(results, result_path("mask_propagation_davis.json", args.record, args.out))


if __name__ == "__main__":
    main()
