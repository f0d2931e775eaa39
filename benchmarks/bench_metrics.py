"""Cost of the quality metrics that every run computes (videoedit/metrics/), per stage.

    python benchmarks/bench_metrics.py --frames 16 --size 512
    python benchmarks/bench_metrics.py --frames 16 --size 512 --clip      # + a random-weight ViT-B/32 CLIP

The source is the generated two-figures clip; the "edit" is the source with noise added (the values do
not matter, only the time). ``--clip`` builds open_clip's ViT-B/32 with random weights (no download) to
time CLIP-T/CLIP-F on this device.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, machine, peak_rss_mib, result_path, save, timed

from videoedit.data.synthetic import TwoFiguresClip
from videoedit.metrics.clip_score import OpenClipEncoder, clip_scores
from videoedit.metrics.evaluate import Evaluator
from videoedit.metrics.preservation import preservation
from videoedit.metrics.temporal import source_flows, warp_error
from videoedit.motion import DISFlow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--clip", action="store_true")
    parser.add_argument("--out", default=None)
    add_record_argument(parser)
    args = parser.parse_args()

    source_video = TwoFiguresClip(num_frames=args.frames, height=args.size, width=args.size).load()
    source = source_video.frames_uint8()
    masks = source_video.masks.numpy()
    rng = np.random.default_rng(0)
    edit = np.clip(source.astype(np.int16) + rng.integers(-20, 21, source.shape), 0, 255).astype(np.uint8)
    local_prompts = ["Spiderman", "Polar Bear"]  # the background region is preserved

    results: dict = {"frames": args.frames, "size": args.size, "machine": machine()}
    results["load_average_before"] = os.getloadavg()
    with timed(results, "flows_forward_backward_s"):
        flows = source_flows(source, DISFlow())
    with timed(results, "warp_error_s"):
        warp_error(edit, flows)
    with timed(results, "preservation_s"):
        preservation(source, edit, masks, source_video.regions, local_prompts)
    if args.clip:
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
        encoder = OpenClipEncoder(
            model, preprocess, open_clip.get_tokenizer("ViT-B-32"), name="ViT-B-32 random"
        )
        clip_scores(edit[:2], "warm-up", encoder)
        with timed(results, "clip_scores_s"):
            clip_scores(edit, "two astronauts jogging on the moon", encoder)
    listing = [{"name": "e", "prompt": "two astronauts", "local_prompts": local_prompts}]
    start = time.perf_counter()
    Evaluator(clip_model=encoder if args.clip else None).evaluate(
        source, {"e": edit}, listing, masks, source_video.regions
    )
    results["evaluator_total_s"] = round(time.perf_counter() - start, 3)
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    results["load_average_after"] = os.getloadavg()
    results["torch_threads"] = torch.get_num_threads()
    out = result_path(f"metrics_{args.frames}x{args.size}.json", args.record, args.out)
    save(results, out)


if __name__ == "__main__":
    main()
