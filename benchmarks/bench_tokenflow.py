"""TokenFlow: peak memory and time per denoising step vs number of frames, ours vs the official structure.

Each (implementation, frame count) runs in a fresh subprocess with the tiny model on the CPU; the
inversion is replaced by random latents (only the denoising steps are measured). Implementations:

``ours``    :class:`TokenFlowPipeline` as shipped: extended attention as one SDPA call over the keyframes,
            chunked nearest-neighbour search (4096 query tokens per block).
``window``  ours with ``keyframe_window=1`` (each keyframe attends to its 3 nearest keyframes).
``naive``   the official structure re-expressed in our pipeline: extended attention with the keys and
            values of all keyframes concatenated and repeated per keyframe and a Python loop over
            heads (official ``sa_forward``, frame by frame beyond 12 keyframes), and the full
            ``(B*N) x (2*N)`` cosine similarity at once (official ``batch_cosine_sim``).

Peak memory is the process's peak resident set size during the edit call minus its size just before
(``/proc/self/clear_refs`` resets the peak; Linux). Time per step is the median over the steps after
the first, both wall-clock and process CPU time (with one thread, CPU time is the compute the step
needs; it is far less sensitive than wall time to other jobs on a shared machine). Run::

    python benchmarks/bench_tokenflow.py --frames 8 16 32 64 --size 256 --steps 3

(the command of ``results/tokenflow_tiny_cpu.json`` and ``benchmarks/README.md``; ``--size`` defaults to 128).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, machine, result_path, save

IMPLS = ("ours", "window", "naive")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _naive_pipeline_class():
    from videoedit.attention.tokenflow import TokenFlowAttnProcessor
    from videoedit.pipelines.pipeline_tokenflow import TokenFlowPipeline

    class NaiveTokenFlowAttnProcessor(TokenFlowAttnProcessor):
        """Official ``sa_forward``: K/V of all keyframes repeated per keyframe, a loop over heads."""

        def extended_attention(self, query, key, value, num_frames, scale):
            f, heads, n, d = key.shape
            k = key.permute(1, 0, 2, 3).reshape(1, heads, f * n, d).repeat(f, 1, 1, 1)  # (F, h, F*N, d)
            v = value.permute(1, 0, 2, 3).reshape(1, heads, f * n, d).repeat(f, 1, 1, 1)
            step = f if f <= 12 else 1  # official: all frames at once up to 12, then frame by frame
            out = torch.empty_like(query)
            for start in range(0, f, step):
                sl = slice(start, start + step)
                for j in range(heads):
                    sim = torch.bmm(query[sl, j], k[sl, j].transpose(-1, -2)) * scale
                    out[sl, j] = torch.bmm(sim.softmax(dim=-1), v[sl, j])
            return out

    class NaiveTokenFlowPipeline(TokenFlowPipeline):
        processor_class = NaiveTokenFlowAttnProcessor

    return NaiveTokenFlowPipeline


def worker(impl: str, num_frames: int, size: int, steps: int, batch_size: int, threads: int) -> dict:
    """One measurement (runs in its own process)."""
    torch.set_num_threads(threads)
    from videoedit.inversion.ddim import InversionOutput, sampling_timesteps
    from videoedit.models.tiny import build_tiny_components
    from videoedit.pipelines.pipeline_tokenflow import TokenFlowPipeline

    components = build_tiny_components(seed=0, tokenizer_cache_dir=os.environ.get("TOKENIZER_DIR"))
    cls = _naive_pipeline_class() if impl == "naive" else TokenFlowPipeline
    pipe = cls.from_components(components)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    h = size // pipe.vae_scale_factor
    keep = [*sampling_timesteps(pipe.scheduler, steps), 999]  # + the noisiest latent of a 500-step inversion
    inversion = InversionOutput(
        latents={t: torch.randn(num_frames, 4, h, h, generator=g) for t in keep},
        source_latents=torch.randn(num_frames, 4, h, h, generator=g),
    )
    options = {
        "ours": {},
        "window": {"keyframe_window": 1},
        "naive": {"nn_chunk_size": None},
    }[impl]
    stamps = []
    rss_before = _rss_kib("VmRSS")
    reset = Path("/proc/self/clear_refs")
    try:
        reset.write_text("5")  # reset VmHWM to the current RSS
        peak_field = "VmHWM"
    except OSError:
        peak_field = None
    start = (time.perf_counter(), time.process_time())
    out = pipe(
        "a marble sculpture",
        inversion,
        source_prompt="a woman running",
        num_inference_steps=steps,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=lambda p, i, t, kw: stamps.append((time.perf_counter(), time.process_time())),
        output_type="latent",
        **options,
    )
    wall = [b[0] - a[0] for a, b in zip([start, *stamps[:-1]], stamps)]
    cpu = [b[1] - a[1] for a, b in zip([start, *stamps[:-1]], stamps)]
    step_cpu = statistics.median(cpu[1:] or cpu)
    peak = _rss_kib(peak_field) if peak_field else None
    return {
        "impl": impl,
        "frames": num_frames,
        "keyframes": len(out.keyframes[0]),
        "size": size,
        "step_wall_s": [round(t, 3) for t in wall],
        "step_cpu_s": [round(t, 3) for t in cpu],
        "cpu_s_per_step": round(step_cpu, 3),
        "cpu_ms_per_frame": round(1000 * step_cpu / num_frames, 1),
        "wall_s_per_step": round(statistics.median(wall[1:] or wall), 3),
        "peak_rss_delta_mib": None if peak is None else round((peak - rss_before) / 1024, 1),
        "rss_before_mib": round(rss_before / 1024, 1),
        "keyframe_cache_mib": round(out.cache_bytes / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps (the first is a warm-up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="default: tokenflow_tiny_cpu.json in benchmarks/runs")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "FRAMES"), help=argparse.SUPPRESS)
    add_record_argument(parser)
    args = parser.parse_args()
    if args.worker:
        impl, frames = args.worker
        print(json.dumps(worker(impl, int(frames), args.size, args.steps, args.batch_size, args.threads)))
        return
    rows = []
    for frames in args.frames:
        for impl in args.impl:
            cmd = [sys.executable, __file__, "--worker", impl, str(frames), "--size", str(args.size)]
            cmd += [
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(row, flush=True)
            rows.append(row)
    load = os.getloadavg()
    save(
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {**machine(), "threads": args.threads, "loadavg_at_end": [round(x, 2) for x in load]},
            "settings": {
                "size": args.size,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "model": "tiny",
            },
            "rows": rows,
        },
        result_path("tokenflow_tiny_cpu.json", args.record, args.out),
    )


if __name__ == "__main__":
    main()
