"""Cost of the video-DiT methods, normalised as papers do.

    python benchmarks/bench_wan.py flowedit [--models wan_tiny wan21_1_3b_random] [--record]
    python benchmarks/bench_wan.py layout [--frames 16 --grid 16] [--record]   # recorded with --grid 32

``flowedit``: one step of FlowEdit against one step of plain CFG sampling (two transformer calls, as
diffusers' ``WanPipeline``), same clip and latents, on the tiny Wan model and on a transformer with Wan 2.1
1.3B's exact shapes (random weights) at small latents (9 frames at 128x128: 3 latent frames of 8x8 tokens).
Each measurement runs in a fresh subprocess: ``seconds`` is the step's wall time (median of at least
``--repeat`` steps and 2 s of them), ``peak_mib`` the process's peak resident set during the timed steps (the
peak is reset after loading and a warm-up step) above what the loaded model holds, ``process_peak_mib`` the
same peak with the weights: papers compare a GPU's whole peak, so ``memory_process`` is the convention and
``memory_step`` the stricter view (not given where plain sampling's is below ``MIN_STEP_MIB``: noise).

``layout``: one self-attention call of Wan 2.1 1.3B's shape (12 heads of 128) over ``F' x grid^2`` tokens with
three regions: ``ours`` (layout-modulated, query-chunked: :func:`~videoedit.attention.st_layout.full_frame_attention`),
``plain_chunked`` (the same chunking, no modulation: the time baseline), ``naive`` (the full-matrix form:
the ``N x N`` pair mask and scores, per head, as VideoGrain's official code) and ``sdpa``; and the cross-attention
of the same queries over 512 prompt tokens, modulated (``cross_ours``) or not (``cross_sdpa``).

Results go to ``benchmarks/runs/`` (untracked); ``--record`` writes ``benchmarks/results/`` (tracked).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_record_argument, results_dir  # noqa: E402


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    """The process's peak resident set since the last :func:`_reset_peak` (Linux ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    """Reset the peak resident set to the current one, so that loading the model does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ------------------------------------------------------------------------------------------ flowedit


MIN_SECONDS = 2.0
# below this growth of the peak over the loaded model, a step's memory is allocator noise, not a measurement
MIN_STEP_MIB = 4.0


def flowedit_case(model: str, variant: str, repeat: int) -> dict:
    import torch
    from hydra.utils import instantiate

    from videoedit.attention.state import StepState
    from videoedit.config import compose_config
    from videoedit.pipelines.pipeline_flowedit import FlowEditPipeline, FlowEditSettings

    torch.manual_seed(0)
    backbone = instantiate(compose_config([f"model={model}"]).model)
    components = backbone.load()
    pipe = FlowEditPipeline.from_components(components)
    x = torch.randn(pipe.latent_shape(9, 128, 128))
    cond, uncond = pipe.encode_prompt(["two astronauts jogging on the moon"]), pipe.encode_prompt([""])
    source = pipe.encode_prompt(["two men jogging in a park"])
    settings = FlowEditSettings(velocity_order="batched" if variant == "flowedit_batched" else "sequential")
    state = StepState()
    t = 900.0

    def step() -> torch.Tensor:
        if variant == "sample":
            v = pipe.guided_velocity(x, t, cond, uncond, 5.0, state)
            return x + (-0.05) * v
        z_src = 0.1 * x + 0.9 * torch.randn_like(x)
        z_tar = z_src + (x - x)
        v_src, v_tar = pipe._velocity_pair(z_src, z_tar, t, (source, uncond), (cond, uncond), settings, state)
        return x + (-0.05) * (v_tar - v_src)

    with torch.no_grad():
        step()  # warm-up (kernels, allocator)
        base = _rss_mib()
        _reset_peak()
        times: list[float] = []
        while len(times) < repeat or sum(times) < MIN_SECONDS:  # a tiny step is timed over >= 2 s
            start = time.perf_counter()
            out = step()
            times.append(time.perf_counter() - start)
    assert torch.isfinite(out).all()
    return {
        "model": model,
        "variant": variant,
        "seconds": round(statistics.median(times), 4),
        "peak_mib": round(_peak_mib() - base, 1),
        "loaded_mib": round(base, 1),
        "process_peak_mib": round(_peak_mib(), 1),
        "repeats": len(times),
        "tokens": int(x.shape[2] * x.shape[3] * x.shape[4] // 4),
    }


# ------------------------------------------------------------------------------------------ layout

HEADS, DIM, TEXT = 12, 128, 512


def layout_case(variant: str, frames: int, grid: int, budget_mb: int) -> dict:
    import torch

    from videoedit.attention.st_layout import SelfModulation, chunk_rows, full_frame_attention
    from videoedit.attention.wan_layout import modulated_cross_attention
    from videoedit.layout.regions import layout_from_token_masks

    torch.manual_seed(0)
    n = grid * grid
    total = frames * n
    q, k, v = (torch.randn(HEADS, total, DIM) for _ in range(3))
    masks = torch.zeros(frames, 3, grid, grid, dtype=torch.bool)
    masks[:, 0, :, : grid // 3] = True
    masks[:, 1, :, grid // 3 : 2 * grid // 3] = True
    masks[:, 2, : grid // 2] = True  # overlaps the others
    token_region = torch.full((TEXT,), -1, dtype=torch.long)
    token_region[1:3], token_region[5:7], token_region[9:10] = 0, 1, 2
    layout = layout_from_token_masks(masks, token_region)
    member = layout.flat_member()
    weight = 0.3 * 0.9**5
    scale = DIM**-0.5
    budget = budget_mb * 2**20
    kt, vt = torch.randn(HEADS, TEXT, DIM), torch.randn(HEADS, TEXT, DIM)
    full_frame_attention(q[:, :64], k[:, :64], v[:, :64], 1, scale)  # warm-up
    base = _rss_mib()
    _reset_peak()
    start = time.perf_counter()
    if variant == "naive":
        pairs = (member @ member.T) > 0
        g = (layout.self_size(member, member, frames) * weight)[:, None]
        out = torch.empty_like(q)
        for h in range(HEADS):
            s = (q[h] @ k[h].T) * scale
            hi, lo = s.amax(-1, keepdim=True), s.amin(-1, keepdim=True)
            s = s + pairs * g * (hi - s)
            s = s - (~pairs) * g * (s - lo)
            out[h] = s.softmax(-1) @ v[h]
    elif variant == "ours":
        out = full_frame_attention(
            q,
            k,
            v,
            frames,
            scale,
            modulation=SelfModulation(member, layout.self_size, weight),
            chunk_budget_bytes=budget,
        )
    elif variant == "plain_chunked":
        out = torch.empty_like(q)
        rows = chunk_rows(HEADS, total, 4, budget)
        for a in range(0, total, rows):
            s = torch.matmul(q[:, a : a + rows] * scale, k.transpose(-1, -2))
            out[:, a : a + rows] = s.softmax(-1) @ v
    elif variant == "sdpa":
        out = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None], scale=scale)[0]
    elif variant == "cross_ours":
        positive = layout.cross_mask.reshape(total, TEXT)[:, :20]
        out = modulated_cross_attention(
            q, kt, vt, positive, layout.cross_size.reshape(-1) * weight, 20, budget
        )
    elif variant == "cross_sdpa":
        out = torch.nn.functional.scaled_dot_product_attention(q[None], kt[None], vt[None], scale=scale)[0]
    else:
        raise ValueError(variant)
    seconds = time.perf_counter() - start
    assert torch.isfinite(out).all()
    return {
        "variant": variant,
        "frames": frames,
        "grid": grid,
        "tokens": total,
        "seconds": round(seconds, 3),
        "peak_mib": round(_peak_mib() - base, 1),
    }


# ------------------------------------------------------------------------------------------ driver


def _subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratios(rows: list[dict], baseline: str, group: str) -> dict:
    """Per ``group``, each variant's time and memory divided by the ``baseline`` variant's: ``memory_step`` is
    the step's peak above the loaded model (None where the baseline's is below ``MIN_STEP_MIB``: noise),
    ``memory_process`` the whole process peak, weights included (what a GPU's peak memory compares)."""
    out = {}
    for g in sorted({r[group] for r in rows}):
        ref = next(r for r in rows if r[group] == g and r["variant"] == baseline)
        out[g] = {
            r["variant"]: {
                "time": round(r["seconds"] / ref["seconds"], 2),
                "memory_step": round(r["peak_mib"] / ref["peak_mib"], 2)
                if ref["peak_mib"] >= MIN_STEP_MIB
                else None,
                "memory_process": round(r["process_peak_mib"] / ref["process_peak_mib"], 2),
            }
            for r in rows
            if r[group] == g and r["variant"] != baseline
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["flowedit", "layout"])
    parser.add_argument("--models", nargs="+", default=["wan_tiny", "wan21_1_3b_random"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--budget-mb", type=int, default=256)
    add_record_argument(parser)
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        if args.what == "flowedit":
            print(json.dumps(flowedit_case(args.case[0], args.case[1], int(args.case[2]))))
        else:
            print(json.dumps(layout_case(args.case[0], *(int(c) for c in args.case[1:]))))
        return
    rows = []
    if args.what == "flowedit":
        for model in args.models:
            for variant in ("sample", "flowedit", "flowedit_batched"):
                rows.append(_subprocess(["flowedit", "--case", model, variant, str(args.repeat)]))
                print(rows[-1], flush=True)
        summary = {"vs_plain_sampling": _ratios(rows, "sample", "model")}
    else:
        for variant in ("sdpa", "plain_chunked", "ours", "naive", "cross_sdpa", "cross_ours"):
            rows.append(
                _subprocess(
                    ["layout", "--case", variant, str(args.frames), str(args.grid), str(args.budget_mb)]
                )
            )
            print(rows[-1], flush=True)
        by = {r["variant"]: r for r in rows}
        summary = {
            "ours_time_vs_plain_chunked": round(by["ours"]["seconds"] / by["plain_chunked"]["seconds"], 2),
            "ours_peak_vs_naive": round(by["ours"]["peak_mib"] / by["naive"]["peak_mib"], 3),
            "cross_ours_time_vs_sdpa": round(by["cross_ours"]["seconds"] / by["cross_sdpa"]["seconds"], 2),
        }
    import torch

    result = {
        "what": args.what,
        "threads": torch.get_num_threads(),
        "command": "python benchmarks/bench_wan.py " + " ".join(sys.argv[1:]),
        "results": rows,
        "summary": summary,
    }
    folder = results_dir(args.record)
    folder.mkdir(exist_ok=True)
    path = folder / f"wan_{args.what}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
