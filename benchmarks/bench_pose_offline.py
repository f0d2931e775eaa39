"""Offline pose (mediapipe BlazePose -> OpenPose maps) on DAVIS: detection rate per sequence.

lucia, dance-twirl and tennis show one person in every frame; blackswan, car-turn and car-shadow show
none (their maps must be empty). A frame counts as detected when its map has a skeleton. Rates are
given for the default annotator (``MediapipePose()``: video mode, ``min_presence=0.98``), per-frame
detection (``tracking=False``), and mediapipe's own default presence threshold 0.5, at the native
854x480 size and at the 512x512 centre crop a run works at. Also writes an example image next to a
real OpenPose condition map (a different clip: a visual sanity check only).

    python benchmarks/bench_pose_offline.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotators.pose import MediapipePose
from benchmarks.common import add_record_argument, machine, result_path, save
from videoedit.io.transforms import ResizeSpec
from videoedit.io.video import FrameSampling, read_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PERSON = ("lucia", "dance-twirl", "tennis")
NO_PERSON = ("blackswan", "car-turn", "car-shadow")
RECORD = False  # --record: write into benchmarks/results (set by the command line)


def load(seq: str, size: str) -> np.ndarray:
    frames = np.stack(
        [
            np.asarray(Image.open(SHARED / "davis2016" / "JPEGImages" / seq / f"{i:05d}.jpg").convert("RGB"))
            for i in range(24)
        ]
    )
    if size == "native":
        return frames
    plan = ResizeSpec("center_crop", height=512, width=512).plan(*frames.shape[1:3])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = ((plan.apply_images(x) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(y.permute(0, 2, 3, 1).numpy())


def example_image(maps: np.ndarray, frames: np.ndarray) -> None:
    """frame | our offline map | a real OpenPose ControlNet condition (pose_dance1.mp4), 256 px tall."""
    real = read_video(SHARED / "conditions" / "pose_dance1.mp4", FrameSampling(0, 1)).frames[0]
    panels = []
    for img in (frames[12], maps[12], real):
        im = Image.fromarray(img)
        panels.append(np.asarray(im.resize((round(im.width * 256 / im.height), 256), Image.BILINEAR)))
    gap = np.full((256, 6, 3), 255, np.uint8)
    image = Image.fromarray(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
    path = result_path("pose_offline_example.png", RECORD)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=96).save(path, optimize=True)  # keep it small


def main() -> None:
    configs = {
        "default (video, presence 0.98)": {},
        "per-frame (presence 0.98)": {"tracking": False},
        "mediapipe default presence 0.5 (video)": {"min_presence": 0.5},
    }
    results: dict = {"machine": {**machine(), "load_average_start": os.getloadavg()}, "rates": {}}
    for size in ("native", "crop512"):
        for name, kwargs in configs.items():
            annotator = MediapipePose(**kwargs)
            row = {}
            for seq in (*PERSON, *NO_PERSON):
                frames = load(seq, size)
                start = time.perf_counter()
                maps = annotator(frames)
                seconds = time.perf_counter() - start
                row[seq] = round(float(np.mean([m.any() for m in maps])), 3)
                row[f"{seq} s/frame"] = round(seconds / len(frames), 3)
                if size == "crop512" and not kwargs and seq == "tennis":
                    example_image(maps, frames)
            results["rates"][f"{size} | {name}"] = row
            print(size, name, {k: v for k, v in row.items() if "s/frame" not in k}, flush=True)
    default = results["rates"]["native | default (video, presence 0.98)"]
    results["blackswan empty (default)"] = default["blackswan"] == 0.0
    results["machine"]["load_average_end"] = os.getloadavg()
    save(results, result_path("pose_offline_davis.json", RECORD))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_record_argument(parser)
    RECORD = parser.parse_args().record
    main()
