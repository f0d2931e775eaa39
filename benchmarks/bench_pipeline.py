"""Time of each pipeline stage, and how much of the wall time is spent outside UNet+ControlNet forwards.

    python benchmarks/bench_pipeline.py --model tiny --frames 8 --size 256 --steps 10
    python benchmarks/bench_pipeline.py --model sd15 --frames 2 --size 256 --steps 2

``--model sd15`` builds SD-1.5-shaped components with random weights (no download); with 2 steps the
inversion makes one UNet+ControlNet call and the editing two (at small latents). The ratio
``(inversion + sampling wall time) / (time inside UNet + ControlNet forwards)`` is reported as
``wall_over_network_time``; ``overhead_fraction`` removes the VAE encoding the inversion does and is the
time our pipeline code adds around the networks, as a fraction of the network time (0 = none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ForwardClock, add_record_argument, machine, peak_rss_mib, result_path, save, timed

from videoedit.data.synthetic import render_two_figures
from videoedit.io.transforms import frames_to_tensor
from videoedit.models.tiny import build_random_sd15_components, build_tiny_components
from videoedit.pipelines.pipeline_ddim import DDIMEditPipeline


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=None)
    add_record_argument(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict = {"config": vars(args), "machine": machine(), "seconds": {}}
    t = results["seconds"]
    with timed(t, "build_model"):
        components = (build_tiny_components if args.model == "tiny" else build_random_sd15_components)(
            controlnet=True
        )
    pipe = DDIMEditPipeline.from_components(components)
    pipe.set_progress_bar_config(disable=True)
    clip = render_two_figures(args.frames, args.size, args.size)
    frames = frames_to_tensor(clip["frames"])
    control = clip["openpose"]
    with torch.no_grad():
        with timed(t, "encode_prompt"):
            pipe.encode_prompt(["two men jogging in a park"])
        with timed(t, "vae_encode"):
            pipe.encode_frames(frames)
        clock = ForwardClock(pipe.unet, pipe.controlnet)
        vae_clock = ForwardClock(pipe.vae.encoder)  # the inversion encodes the frames itself
        with timed(t, "inversion"):
            inversion = pipe.invert(
                frames, "two men jogging", control=control, num_inference_steps=args.steps
            )
        inv_net = clock.seconds
        with timed(t, "sampling"):
            out = pipe(
                "two astronauts jogging",
                inversion,
                control=control,
                num_inference_steps=args.steps,
                output_type="latent",
            )
        clock.remove()
        vae_clock.remove()
        with timed(t, "vae_decode"):
            pipe.decode_latents(out.latents)
    net = clock.seconds
    results["unet_controlnet_forward_seconds"] = {
        "inversion": round(inv_net, 3),
        "sampling": round(net - inv_net, 3),
    }
    results["network_calls"] = clock.calls
    wall = t["inversion"] + t["sampling"]
    results["vae_encode_in_inversion_seconds"] = round(vae_clock.seconds, 3)
    results["wall_over_network_time"] = round(wall / net, 3)
    # what our code adds: wall time of inversion + sampling outside the UNet, ControlNet and VAE forwards
    results["overhead_fraction"] = round((wall - net - vae_clock.seconds) / net, 4)
    results["peak_rss_mib"] = round(peak_rss_mib())
    save(results, result_path(f"pipeline_{args.model}.json", args.record, args.out))


if __name__ == "__main__":
    main()
