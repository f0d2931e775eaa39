"""Cost of the quality metrics that every run computes (videoedit/metrics/), per stage.

    python benchmarks/bench_metrics.py --frames 16 --size 512
    python benchmarks/bench_metrics.py --frames 16 --size 512 --models --device cuda

The source is the generated two-figures clip; the "edit" is the source with noise added (the values do
not matter, only the time). ``--models`` builds the metric models with random weights in their published
shapes (no download; the cost is that of the real models): CLIP ViT-L/14 (CLIP-T, frame consistencies),
a ViT-H/14 CLIP (PickScore's shape), LPIPS with an AlexNet backbone and RAFT-large (warp error, motion
alignment). Without them: DIS flow, PSNR/SSIM only (``--lpips`` adds LPIPS). ``--record`` writes into
``benchmarks/results/`` (tracked), otherwise ``benchmarks/runs/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, machine, peak_rss_mib, result_path, save, timed

from videoedit.data.synthetic import TwoFiguresClip
from videoedit.metrics.clip_score import ClipScorer, clip_scores, pick_score
from videoedit.metrics.evaluate import Evaluator
from videoedit.metrics.preservation import LPIPS, preservation
from videoedit.metrics.temporal import motion_alignment, source_flows, warp_error
from videoedit.models.tokenizer import load_clip_tokenizer
from videoedit.motion import DISFlow, RAFTFlow


def random_clip(vision: dict, text: dict, projection_dim: int, device: str) -> ClipScorer:
    """A CLIPModel of the given shape with random weights (224 px, patch 14), fp32."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        vision_config={"image_size": 224, "patch_size": 14, **vision},
        text_config={"vocab_size": 49408, **text},
        projection_dim=projection_dim,
    )
    return ClipScorer(CLIPModel(config), CLIPImageProcessor(), load_clip_tokenizer(), "random", device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--models", action="store_true", help="all of --raft --clip --pickscore --lpips")
    for name in ("raft", "clip", "pickscore", "lpips"):
        parser.add_argument(f"--{name}", action="store_true", help=f"time {name} (random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    add_record_argument(parser)
    args = parser.parse_args()
    if args.models:
        args.raft = args.clip = args.pickscore = args.lpips = True

    source_video = TwoFiguresClip(num_frames=args.frames, height=args.size, width=args.size).load()
    source = source_video.frames_uint8()
    masks = source_video.masks.numpy()
    rng = np.random.default_rng(0)
    edit = np.clip(source.astype(np.int16) + rng.integers(-20, 21, source.shape), 0, 255).astype(np.uint8)
    local_prompts = ["Spiderman", "Polar Bear"]  # the background region is preserved
    prompt = "two astronauts jogging on the moon"

    results: dict = {"frames": args.frames, "size": args.size, "device": args.device, "machine": machine()}
    results["load_average_before"] = os.getloadavg()

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    estimator = DISFlow()
    with timed(results, "dis_flows_forward_backward_s"):
        flows = source_flows(source, estimator)
    with timed(results, "warp_error_s"):
        warp_error(edit, flows)
    with timed(results, "motion_alignment_dis_s"):
        motion_alignment(edit, flows, estimator)
    with timed(results, "psnr_ssim_preserved_s"):
        preservation(source, edit, masks, source_video.regions, local_prompts)
    clip = pick = lpips = None
    if args.raft:
        with tempfile.TemporaryDirectory() as tmp:
            from torchvision.models.optical_flow import raft_large

            torch.save(raft_large(weights=None).state_dict(), Path(tmp) / "raft.pth")
            raft = RAFTFlow(str(Path(tmp) / "raft.pth"), device=args.device)
        raft_flows = source_flows(source[:2], raft)  # warm-up
        sync()
        with timed(results, "raft_flows_forward_backward_s"):
            raft_flows = source_flows(source, raft)
            sync()
        with timed(results, "motion_alignment_raft_s"):
            motion_alignment(edit, raft_flows, raft)
            sync()
    if args.clip:
        clip = random_clip(
            {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
            },
            {
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
            },
            768,
            args.device,
        )
        clip_scores(edit[:2], "warm-up", clip)
        with timed(results, "clip_vit_l14_scores_s"):
            clip_scores(edit, prompt, clip)
            sync()
    if args.pickscore:
        pick = random_clip(
            {
                "hidden_size": 1280,
                "intermediate_size": 5120,
                "num_hidden_layers": 32,
                "num_attention_heads": 16,
            },
            {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
            },
            1024,
            args.device,
        )
        pick_score(edit[:2], "warm-up", pick)
        with timed(results, "pickscore_vit_h14_s"):
            pick_score(edit, prompt, pick)
            sync()
    if args.lpips:
        lpips = LPIPS("alex", device=args.device, random_backbone=True)
        with timed(results, "psnr_ssim_lpips_preserved_s"):
            preservation(source, edit, masks, source_video.regions, local_prompts, lpips=lpips)
            sync()
    listing = [{"name": "e", "prompt": prompt, "local_prompts": local_prompts}]
    evaluator = Evaluator(clip_model=clip, pickscore_model=pick, lpips_net=lpips, flow_backend="dis")
    start = time.perf_counter()
    evaluator.evaluate(source, {"e": edit}, listing, masks, source_video.regions, args.device)
    sync()
    results["evaluator_total_dis_s"] = round(time.perf_counter() - start, 3)
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    if args.device.startswith("cuda"):
        results["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    results["load_average_after"] = os.getloadavg()
    results["torch_threads"] = torch.get_num_threads()
    heavy = [n for n in ("raft", "clip", "pickscore") if getattr(args, n)]  # model-based, meant for a GPU
    suffix = "".join(f"_{n}" for n in heavy) + (
        "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    )
    save(results, result_path(f"metrics_{args.frames}x{args.size}{suffix}.json", args.record, args.out))


if __name__ == "__main__":
    main()
