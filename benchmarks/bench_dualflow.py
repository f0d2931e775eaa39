"""Dual-flow attention: flow accuracy on real clips, flow backend speed, lockstep overhead, streaming memory.

    python benchmarks/bench_dualflow.py warp        # DIS vs zero flow photometric error on ../shared/data clips
    python benchmarks/bench_dualflow.py flowspeed   # flow backends per frame pair at 512x512
    python benchmarks/bench_dualflow.py lockstep --model tiny --frames 8 --size 256 --steps 4
    python benchmarks/bench_dualflow.py memory --frames 8 32 128   # streaming (and lockstep) peak memory
    python benchmarks/bench_dualflow.py masks --frames 8 --size 256  # masks + bank per lockstep update

``lockstep`` reports process CPU time per step (one thread: ``OMP_NUM_THREADS=1``), the fastest of
``--repeats`` runs, and the CPU time spent measuring the generated flow and computing masks + bank.
Each sub-command writes ``benchmarks/results/dualflow_<name>.json``. ``memory`` runs every length in a
fresh subprocess and samples the process RSS (``/proc/self/status``) every 2 ms during the edit only
(the model, the clip and its inversion are built before, then freed pages are returned to the OS with
``malloc_trim``); it also reports the bytes the streaming K/V
stores held at their peak (``kv_cache_peak_bytes``, counted by the pipeline).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, machine, result_path, save

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clips"


def _machine() -> dict:
    return {
        **machine(),
        "load_average": os.getloadavg(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


# ----------------------------------------------------------------------------------------- warp errors


def bench_warp(args) -> dict:
    """Mean photometric error (0-255, float) of frame t vs frame t-1 warped into it, with the DIS flow
    t -> t-1 and with zero flow; all pixels, and only those the forward-backward check finds visible."""
    from videoedit.io.video import FrameSampling, read_video
    from videoedit.motion import DISFlow, occlusion, photometric_error, video_flows

    out = {}
    for clip in sorted(CLIPS.glob("*.mp4")):
        video = read_video(clip, FrameSampling(0, args.frames, args.stride))
        frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float()
        bwd = video_flows(video.frames, DISFlow(args.preset), direction="backward")  # t+1 -> t
        fwd = video_flows(video.frames, DISFlow(args.preset), direction="forward")
        cur, prev = frames[1:], frames[:-1]
        visible = ~occlusion(bwd, fwd)
        dis = photometric_error(cur, prev, bwd)
        zero = photometric_error(cur, prev, torch.zeros_like(bwd))
        out[clip.name] = {
            "size": list(video.frames.shape[1:3]),
            "pairs": len(dis),
            "dis": round(float(dis.mean()), 3),
            "zero": round(float(zero.mean()), 3),
            "dis_visible": round(float(photometric_error(cur, prev, bwd, visible).mean()), 3),
            "zero_visible": round(
                float(photometric_error(cur, prev, torch.zeros_like(bwd), visible).mean()), 3
            ),
            "visible_fraction": round(float(visible.float().mean()), 3),
            "dis_below_zero_on_every_pair": bool((dis < zero).all()),
            "mean_motion_px": round(float(bwd.square().sum(1).sqrt().mean()), 2),
        }
    return {"config": vars(args), "machine": _machine(), "clips": out}


# ----------------------------------------------------------------------------------------- flow speed


def bench_flowspeed(args) -> dict:
    from videoedit.motion import DISFlow, RAFTFlow

    if (CLIPS / "wolf.mp4").is_file():
        from videoedit.io.video import FrameSampling, read_video

        frames = read_video(CLIPS / "wolf.mp4", FrameSampling(0, 2, 1)).frames
        frames = np.ascontiguousarray(frames[:, :512, :512])
    else:
        frames = (np.random.default_rng(0).random((2, 512, 512, 3)) * 255).astype(np.uint8)
    a, b = frames[:1], frames[1:]
    results = {}
    for preset in ("ultrafast", "fast", "medium"):
        est = DISFlow(preset)
        est(a, b)
        start = time.perf_counter()
        for _ in range(args.repeats):
            est(a, b)
        results[f"dis_{preset}"] = round((time.perf_counter() - start) / args.repeats, 4)
    # RAFT-large's speed does not depend on its weights: time it with random ones (no download)
    from torchvision.models.optical_flow import raft_large

    path = Path(args.tmp) / "raft_random.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(raft_large(weights=None).state_dict(), path)
    for updates in (12, 4):
        est = RAFTFlow(
            str(path), num_flow_updates=updates, device="cuda" if torch.cuda.is_available() else "cpu"
        )
        start = time.perf_counter()
        est(a, b)
        results[f"raft_large_{updates}_updates"] = round(time.perf_counter() - start, 3)
    return {"config": vars(args), "machine": _machine(), "seconds_per_pair_512": results}


# ----------------------------------------------------------------------------------------- lockstep


def _setup(model: str, frames: int, size: int, steps: int):
    from videoedit.data.synthetic import TwoFiguresClip
    from videoedit.models.tiny import build_random_sd15_components, build_tiny_components
    from videoedit.motion import DISFlow
    from videoedit.pipelines.pipeline_dualflow import DualFlowPipeline, LatentSourceFlows

    torch.manual_seed(0)
    if model == "tiny":
        components = build_tiny_components(controlnet=True)
    else:
        components = build_random_sd15_components(controlnet=True)
    source = TwoFiguresClip(num_frames=frames, height=size, width=size).load()
    pipe = DualFlowPipeline.from_components(components)
    pipe.set_progress_bar_config(disable=True)
    control = source.conditions["openpose"]
    with torch.no_grad():
        inversion = pipe.invert(source.frames, source.prompt, control, num_inference_steps=steps)
    flows = LatentSourceFlows.compute(source.frames, DISFlow(), (size // 8, size // 8))
    return components, pipe, inversion, flows, control


def bench_lockstep(args) -> dict:
    from videoedit.motion import DISFlow
    from videoedit.pipelines import pipeline_dualflow as pdf
    from videoedit.pipelines.pipeline_ddim import DDIMEditPipeline

    components, pipe, inversion, flows, control = _setup(args.model, args.frames, args.size, args.steps)
    ddim = DDIMEditPipeline.from_components(components)
    ddim.set_progress_bar_config(disable=True)
    spent = {"generated_flow": 0.0, "masks_and_bank": 0.0}

    def timed_fn(fn, key):
        def wrapper(*a, **k):
            start = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - start

        return wrapper

    pipe.generated_flows = timed_fn(pipe.generated_flows, "generated_flow")
    originals = (pdf.frame_masks, pdf.lockstep_banks)
    pdf.frame_masks = timed_fn(pdf.frame_masks, "masks_and_bank")
    pdf.lockstep_banks = timed_fn(pdf.lockstep_banks, "masks_and_bank")
    kwargs = dict(control=control, num_inference_steps=args.steps, guidance_scale=7.5, output_type="latent")
    rows = {}
    runs = [
        ("ddim", lambda: ddim("two astronauts jogging", inversion, **kwargs)),
        ("dualflow_inactive", lambda: pipe("two astronauts jogging", inversion, flows,
                                           pdf.DualFlowSettings(step_range=(0.0, 0.0)), DISFlow("fast"), **kwargs)),
        ("dualflow_preview", lambda: pipe("two astronauts jogging", inversion, flows,
                                          pdf.DualFlowSettings(), DISFlow("fast"), **kwargs)),
        ("dualflow_decode", lambda: pipe("two astronauts jogging", inversion, flows,
                                         pdf.DualFlowSettings(generated_flow="decode"), DISFlow("fast"), **kwargs)),
    ]  # fmt: skip
    if args.prev_reuse:  # one preview row per form instead of the default's preview and decode rows

        def form_run(form: str):
            settings = pdf.DualFlowSettings(prev_reuse=form)
            return lambda: pipe(
                "two astronauts jogging", inversion, flows, settings, DISFlow("fast"), **kwargs
            )

        runs = runs[:2] + [(f"dualflow_preview_{form}", form_run(form)) for form in args.prev_reuse]
    try:
        for name, run in runs:
            best = None
            for _ in range(args.repeats):  # the fastest of a few runs: the machine is shared
                for key in spent:
                    spent[key] = 0.0
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if best is None or cpu < best[1]:
                    best = (wall, cpu, dict(spent))
            wall, cpu, part = best
            rows[name] = {
                "cpu_seconds_per_step": round(cpu / args.steps, 3),
                "wall_seconds_per_step": round(wall / args.steps, 3),
                "generated_flow_per_step": round(part["generated_flow"] / args.steps, 4),
                "masks_and_bank_per_step": round(part["masks_and_bank"] / args.steps, 4),
            }
    finally:
        pdf.frame_masks, pdf.lockstep_banks = originals
    base = rows["ddim"]["cpu_seconds_per_step"]
    for row in rows.values():
        row["relative_to_ddim"] = round(row["cpu_seconds_per_step"] / base, 3)
        row["flow_and_masks_fraction_of_ddim_step"] = round(
            (row["generated_flow_per_step"] + row["masks_and_bank_per_step"]) / base, 4
        )
    return {"config": vars(args), "machine": _machine(), "rows": rows}


# ----------------------------------------------------------------------------------------- masks


def bench_masks(args) -> dict:
    """Process CPU time of one lockstep mask update (``frame_masks`` + ``lockstep_banks``, what the
    ``lockstep`` rows' ``masks_and_bank`` column sums over a run) on TwoFiguresClip's DIS source flows at
    the latent grid, with a generated flow = source + noise; fastest of ``--repeats`` batches of 20."""
    from videoedit.attention.dualflow import MemoryBank, lockstep_banks
    from videoedit.data.synthetic import TwoFiguresClip
    from videoedit.motion import DISFlow
    from videoedit.motion.discrepancy import frame_masks
    from videoedit.pipelines.pipeline_dualflow import LatentSourceFlows

    source = TwoFiguresClip(num_frames=args.frames, height=args.size, width=args.size).load()
    flows = LatentSourceFlows.compute(source.frames, DISFlow(), (args.size // 8, args.size // 8))
    gen = flows.backward + 0.3 * torch.randn(flows.backward.shape, generator=torch.Generator().manual_seed(0))

    def update() -> None:
        masks = frame_masks(flows.backward, flows.forward, gen)
        lockstep_banks(MemoryBank(), flows.backward, masks.admission.tolist())

    best = float("inf")
    for _ in range(args.repeats):
        start = time.process_time()
        for _ in range(20):
            update()
        best = min(best, (time.process_time() - start) / 20)
    return {"config": vars(args), "machine": _machine(), "cpu_seconds_per_update": round(best, 5)}


# ----------------------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(args) -> dict:
    """One length, one mode (run in a subprocess)."""
    from videoedit.motion import DISFlow
    from videoedit.pipelines.pipeline_dualflow import DualFlowSettings

    _, pipe, inversion, flows, control = _setup("tiny", args.frames[0], args.size, args.steps)
    settings = DualFlowSettings(mode=args.mode, bank_size=2, motion_threshold=0.0, quality_threshold=1.01)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed pages back so the baseline is what is in use
    base = _rss_bytes()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    out = pipe("two astronauts", inversion, flows, settings, DISFlow("fast"), control=control,
               num_inference_steps=args.steps, output_type="latent")  # fmt: skip
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    return {
        "mode": args.mode,
        "frames": args.frames[0],
        "rss_before_edit_mib": round(base / 2**20, 1),
        "peak_rss_increase_during_edit_mib": round((peak[0] - base) / 2**20, 1),
        "kv_cache_peak_mib": round(out.info.get("kv_cache_peak_bytes", 0) / 2**20, 3),
        "keyframes": out.keyframes,
        "seconds": round(seconds, 2),
    }


def bench_memory(args) -> dict:
    rows = []
    for mode in args.modes:
        for frames in args.frames:
            if mode == "lockstep" and frames > args.max_lockstep_frames:
                continue
            cmd = [sys.executable, __file__, "memory-child", "--frames", str(frames), "--mode", mode,
                   "--size", str(args.size), "--steps", str(args.steps)]  # fmt: skip
            env = dict(os.environ)
            if args.malloc_mmap_threshold:  # glibc: serve blocks above this size with mmap (no heap creep)
                env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
            run = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            line = run.stdout.strip().splitlines()[-1]
            rows.append(json.loads(line))
            print(rows[-1], flush=True)
    return {"config": vars(args), "machine": _machine(), "rows": rows}


# ----------------------------------------------------------------------------------------- prev_reuse

FORMS = {  # name -> DualFlowSettings overrides (prev_reuse and its parameters)
    "global": {"prev_reuse": "global"},
    "window": {"prev_reuse": "window"},
    "window_prior0": {"prev_reuse": "window", "window_prior": 0.0},
    "blend": {"prev_reuse": "blend"},
}


def _clip_frames(path: Path, frames: int, stride: int, size: int) -> np.ndarray:
    """``(F, size, size, 3)`` uint8: the first frames of a (square) clip, area-resized."""
    from videoedit.io.video import FrameSampling, read_video

    video = read_video(path, FrameSampling(0, frames, stride)).frames
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()


def _latent_warp_error(latents: torch.Tensor, flows) -> float:
    """Mean |latent_t - warp(latent_t-1, flow t -> t-1)| over the pixels of the latent grid that the
    forward-backward check keeps: the same measure at the resolution where the attention acts."""
    from videoedit.motion import occlusion, photometric_error

    visible = ~occlusion(flows.backward[1:], flows.forward[1:])
    lat = latents.float().cpu()
    return float(photometric_error(lat[1:], lat[:-1], flows.backward[1:], visible).mean())


def bench_prev_reuse_warp(args) -> dict:
    """Warp error (8-bit levels, float, ``videoedit.metrics.temporal``) of the tiny model's edits along
    the source flow, per ``prev_reuse`` form and mode, on the first frames of each shared clip; the DDIM
    edit (dual-flow switched off: ``step_range [0, 0]``) and the source itself for reference. Also the
    same error on the output latents (``latent_*``, latent units, latent-grid flows), where attention acts
    and the tiny model's random VAE decoder does not blur the picture."""
    from videoedit.io.transforms import frames_to_tensor
    from videoedit.metrics.temporal import source_flows, warp_error
    from videoedit.models.tiny import build_tiny_components
    from videoedit.motion import DISFlow
    from videoedit.pipelines.pipeline_dualflow import DualFlowPipeline, DualFlowSettings, LatentSourceFlows

    torch.manual_seed(0)
    pipe = DualFlowPipeline.from_components(build_tiny_components())
    pipe.set_progress_bar_config(disable=True)
    clips = {}
    for path in sorted(CLIPS.glob("*.mp4")):
        if args.clips and path.stem not in args.clips:
            continue
        frames = _clip_frames(path, args.frames, args.stride, args.size)
        tensor = frames_to_tensor(frames)
        metric = source_flows(frames, DISFlow("medium"))
        with torch.no_grad():
            inversion = pipe.invert(tensor, "", None, num_inference_steps=args.steps)
        latent = (args.size // 8, args.size // 8)
        flows = LatentSourceFlows.compute(tensor, DISFlow("medium"), latent)
        row = {
            "source": round(warp_error(frames, metric).warp_error, 3),
            "latent_source": round(_latent_warp_error(inversion.source_latents, flows), 4),
        }
        runs = {"ddim": {"step_range": (0.0, 0.0)}, **FORMS}
        for mode in args.modes:
            for name, overrides in runs.items():
                if name == "ddim" and mode != args.modes[0]:
                    continue  # switched off, both modes are the same DDIM edit
                start = time.process_time()
                out = pipe(args.prompt, inversion, flows, DualFlowSettings(mode=mode, **overrides),
                           DISFlow("fast"), num_inference_steps=args.steps, guidance_scale=7.5,
                           output_type="np")  # fmt: skip
                key = name if name == "ddim" else f"{mode}_{name}"
                row[f"{key}_cpu_s"] = round(time.process_time() - start, 2)
                row[key] = round(warp_error(out.frames, metric).warp_error, 3)
                row[f"latent_{key}"] = round(_latent_warp_error(out.latents, flows), 4)
                print(path.stem, key, row[key], row[f"latent_{key}"], row[f"{key}_cpu_s"], flush=True)
        row["mean_motion_latent_px"] = round(float(flows.backward[1:].square().sum(1).sqrt().mean()), 3)
        clips[path.stem] = row
    return {"config": vars(args), "machine": _machine(), "clips": clips}


def bench_prev_reuse_cost(args) -> dict:
    """CPU time of one dual-flow processor call per ``prev_reuse`` form at SD-1.5 layer sizes (random
    tensors; lockstep layout: ``2 x frames`` items, each frame after the first reading its predecessor
    and the anchor), plus the peak extra memory of the call (``tracemalloc`` does not see torch's
    allocator, so RSS growth in a fresh subprocess is used)."""
    rows = []
    for tokens, channels in args.layers:
        for form in args.forms:
            cmd = [sys.executable, __file__, "prev-reuse-cost-child", "--form", form, "--tokens", str(tokens),
                   "--channels", str(channels), "--frames", str(args.frames), "--repeats", str(args.repeats)]  # fmt: skip
            run = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return {"config": vars(args), "machine": _machine(), "rows": rows}


def prev_reuse_cost_child(args) -> dict:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from videoedit.attention.dualflow import DualFlowAttnProcessor, DualFlowContext
    from videoedit.attention.state import StepState

    side = round(args.tokens**0.5)
    torch.manual_seed(0)
    heads = 8  # SD-1.5: 8 heads at every resolution (head dim 40, 80, 160)
    attn = Attention(query_dim=args.channels, heads=heads, dim_head=args.channels // heads).eval()
    x = torch.randn(2 * args.frames, side * side, args.channels)
    state = StepState(phase="sample", num_steps=1, num_frames=args.frames, branches=("uncond", "cond"),
                      latent_size=(side, side))  # fmt: skip
    if args.form == "plain":
        proc = AttnProcessor2_0()
    else:
        ctx = DualFlowContext(state, bias_scale=10.0, chunk_size=4, prev_reuse=args.form)
        flows = torch.randn(args.frames, 2, side, side) * 2
        masks = torch.rand(args.frames, 1, side, side)
        bank = torch.full((args.frames, 1), -1)
        bank[1:, 0] = 0
        ctx.set_frames(flows, masks, bank_index=bank)
        proc = DualFlowAttnProcessor("l.attn1", ctx)
    with torch.no_grad():
        proc(attn, x)  # warm-up (and the cached windows/flows of this grid)
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base, peak, stop = _rss_bytes(), [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                time.sleep(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        best = float("inf")
        for _ in range(args.repeats):
            start = time.process_time()
            proc(attn, x)
            best = min(best, time.process_time() - start)
        stop.set()
        thread.join()
    return {
        "form": args.form,
        "tokens": args.tokens,
        "channels": args.channels,
        "frames": args.frames,
        "cpu_seconds": round(best, 4),
        "peak_rss_increase_mib": round((peak[0] - base) / 2**20, 1),
    }


def bench_prev_reuse_proxy(args) -> dict:
    """A weight-free proxy of the reuse step on real motion: how well does what the previous frame
    delivers at each query reproduce the current frame's edit?

    DAVIS-2016 sequences (``../shared/data/davis2016``, ground-truth masks), area-resized; the "edit" of
    a frame inverts the colours inside its ground-truth object mask (so the right value depends on
    where the object is, not only on local appearance). Tokens are 8x8 px patches; queries and keys are
    the SOURCE patches (L2-normalised, softmax temperature ``--tau``), values the EDITED patches of frame
    ``t-1``. For every query of frame ``t`` the previous-frame group's output is computed as each form
    does (``global``: softmax over all tokens of ``t-1``; ``window``: :func:`window_attention` over the
    3x3 tokens around the DIS flow target, distance bias 0.5; ``blend``: the edited patch warped by the
    flow; ``no_flow``: the patch at the same place) and compared with the edited frame ``t``: mean
    absolute error in 8-bit levels over tokens the forward-backward check keeps, and over those inside
    the object."""
    from PIL import Image

    from videoedit.attention.dualflow import flow_window, warp_tokens, window_attention, window_bias
    from videoedit.motion import DISFlow, occlusion, resize_flow, video_flows

    root = ROOT.parent / "shared" / "data" / "davis2016"
    height, width, patch = args.height, args.width, 8
    grid = (height // patch, width // patch)
    out = {}
    for seq in sorted(p.name for p in (root / "JPEGImages").iterdir()):

        def load(folder: str, seq: str = seq, mode: str = "RGB") -> np.ndarray:
            files = sorted((root / folder / seq).glob("*"))[: args.frames]
            resample = Image.Resampling.BOX if mode == "RGB" else Image.Resampling.NEAREST
            return np.stack(
                [np.asarray(Image.open(f).convert(mode).resize((width, height), resample)) for f in files]
            )

        frames = load("JPEGImages")
        masks = load("Annotations", mode="L") > 127  # (F, H, W)
        edited = np.where(masks[..., None], 255 - frames, frames)
        bwd = video_flows(frames, DISFlow("medium"), "backward")  # t+1 -> t
        fwd = video_flows(frames, DISFlow("medium"), "forward")
        flows = resize_flow(bwd.float(), grid)  # (F-1, 2, h, w) in tokens: t -> t-1
        visible = ~occlusion(flows, resize_flow(fwd.float(), grid))  # (F-1, 1, h, w)

        def tokens(x: np.ndarray) -> torch.Tensor:  # (F, H, W, 3) -> (F, 1, N, 3*8*8) float
            t = torch.from_numpy(x).float().permute(0, 3, 1, 2)
            return torch.nn.functional.unfold(t, patch, stride=patch).transpose(1, 2)[:, None]

        src, ed = tokens(frames), tokens(edited)
        feat = src - src.mean(-1, keepdim=True)
        feat = feat / feat.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        fg = torch.from_numpy(masks).float()[:, None]
        fg = torch.nn.functional.avg_pool2d(fg, patch).flatten(1)[1:] > 0.5  # (F-1, N) object tokens of t
        q, k, v, target = feat[1:], feat[:-1], ed[:-1], ed[1:]
        window = flow_window(flows, 3)
        bias = window_bias(torch.zeros(q.shape[0], q.shape[2]), window, 0.0, 0.5, 0.0, q.shape[2])
        reuse = {
            "no_flow": v,
            "blend": warp_tokens(v, flows, grid),
            "window": window_attention(q, k, v, window, bias, args.tau)[0],
            "global": torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=args.tau),
        }
        keep = visible.flatten(1)  # (F-1, N)
        row = {
            "tokens": q.shape[2],
            "pairs": q.shape[0],
            "object_fraction": round(float(fg.float().mean()), 3),
        }
        for name, pred in reuse.items():
            err = (pred - target).abs().mean(-1)[:, 0]  # (F-1, N) levels
            row[name] = round(float(err[keep].mean()), 2)
            row[f"{name}_object"] = round(float(err[keep & fg].mean()), 2)
        out[seq] = row
        print(seq, row, flush=True)
    means = {
        k: round(float(np.mean([r[k] for r in out.values()])), 2)
        for k in next(iter(out.values()))
        if k not in ("tokens", "pairs")
    }
    return {"config": vars(args), "machine": _machine(), "sequences": out, "mean": means}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("warp")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--preset", default="medium")
    p = sub.add_parser("flowspeed")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tmp", default="/tmp/bench_dualflow")
    p = sub.add_parser("lockstep")
    p.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--prev-reuse", nargs="+", choices=["global", "window", "blend"], default=None,
                   help="time these prev_reuse forms (preview rows) instead of the default form's rows")  # fmt: skip
    p = sub.add_parser("masks")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    for name in ("memory", "memory-child"):
        p = sub.add_parser(name)
        p.add_argument("--frames", type=int, nargs="+", default=[8, 32, 128])
        p.add_argument("--size", type=int, default=64)
        p.add_argument("--steps", type=int, default=2)
        if name == "memory":
            p.add_argument("--modes", nargs="+", default=["streaming", "lockstep"])
            p.add_argument("--max-lockstep-frames", type=int, default=128)
            p.add_argument("--malloc-mmap-threshold", type=int, default=None)
        else:
            p.add_argument("--mode", default="streaming")
    p = sub.add_parser("prev-reuse-warp")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--modes", nargs="+", default=["lockstep", "streaming"])
    p.add_argument("--clips", nargs="*", default=None, help="clip names (default: every shared clip)")
    p.add_argument("--prompt", default="a watercolor painting")
    p = sub.add_parser("prev-reuse-proxy")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=448)
    p.add_argument("--tau", type=float, default=20.0, help="softmax temperature on cosine similarities")
    p = sub.add_parser("prev-reuse-cost")
    p.add_argument("--layers", type=lambda s: tuple(int(v) for v in s.split("x")), nargs="+",
                   default=[(4096, 320), (1024, 640), (256, 1280)], help="TOKENSxCHANNELS")  # fmt: skip
    p.add_argument("--forms", nargs="+", default=["plain", "global", "window", "blend"])
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("prev-reuse-cost-child")
    for name, kind in (("--form", str), ("--tokens", int), ("--channels", int), ("--frames", int),
                       ("--repeats", int)):  # fmt: skip
        p.add_argument(name, type=kind, required=True)
    for p in sub.choices.values():
        add_record_argument(p)
    args = parser.parse_args()
    if args.command == "prev-reuse-cost-child":
        print(json.dumps(prev_reuse_cost_child(args)))
        return
    if args.command == "memory-child":
        print(json.dumps(memory_child(args)))
        return
    result = {
        "warp": bench_warp,
        "flowspeed": bench_flowspeed,
        "lockstep": bench_lockstep,
        "memory": bench_memory,
        "masks": bench_masks,
        "prev-reuse-warp": bench_prev_reuse_warp,
        "prev-reuse-cost": bench_prev_reuse_cost,
        "prev-reuse-proxy": bench_prev_reuse_proxy,
    }[args.command](args)
    suffix = f"_{args.model}" if args.command == "lockstep" else ""
    if args.command == "lockstep" and args.prev_reuse:
        suffix += "_prev_reuse"
    if args.command == "memory":
        suffix = f"_{args.size}px" + ("_mmap" if args.malloc_mmap_threshold else "")
    if args.command == "prev-reuse-warp":
        suffix = f"_{args.size}px"
    if args.command == "prev-reuse-proxy":
        suffix = f"_tau{args.tau:g}"
    save(result, result_path(f"dualflow_{args.command.replace('-', '_')}{suffix}.json", args.record))


if __name__ == "__main__":
    main()
