"""One modulated full-frame self-attention call: ours (chunked) vs the naive full-matrix formulation.

    python benchmarks/bench_st_layout.py            # the full table (a few minutes on 2 cores)
    python benchmarks/bench_st_layout.py --quick    # F=8, 16x16 only
    python benchmarks/bench_st_layout.py --memory   # exact tensor memory of one call vs its chunk budget
    python benchmarks/bench_st_layout.py --memory --record   # ... and write results/st_layout_memory.json

``--memory`` counts every tensor allocated inside the call until it is freed
(:class:`videoedit.metrics.tensor_memory.LiveTensorBytes`), so it separates what the chunk budget bounds
(scores, pair masks, ...) from what the call holds anyway (its output; per key group the gathered keys and
values and, for half inputs on the CPU, their fp32 copies): ``st_layout_memory.json`` in ``benchmarks/runs/``,
or ``benchmarks/results/`` with ``--record``.

Each measurement runs in a fresh subprocess; peak memory is the growth of the process's peak resident
set during the call (``ru_maxrss`` after minus the resident set before), so it counts every temporary.

Variants (8 heads, head dim 40, fp32, CPU):
* ``naive``: the official structure re-expressed: the ``(F*hw)^2`` pair mask ``sreg`` built once, then per
  head the full ``(F*hw)^2`` scores, row max/min, the two-step modulation, softmax, ``@ V``.
* ``ours``: :func:`videoedit.attention.st_layout.full_frame_attention` with modulation (chunked queries,
  pair masks from region membership per chunk).
* ``plain_chunked``: the same chunking with no modulation (qk, softmax, pv): the time target's baseline.
* ``sdpa``: unmodulated ``scaled_dot_product_attention`` (what unmodulated layers use).
* ``window``: ours with a 4-frame sliding window + the first frame (memory linear in F).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, result_path

HEADS, DIM = 8, 40


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run_case(variant: str, frames: int, grid: int, budget_mb: int) -> dict:
    import torch

    from videoedit.attention.st_layout import FrameSpan, SelfModulation, chunk_rows, full_frame_attention
    from videoedit.layout.regions import build_layer_layouts

    torch.manual_seed(0)
    n = grid * grid
    total = frames * n
    q, k, v = (torch.randn(HEADS, total, DIM) for _ in range(3))
    masks = torch.zeros(frames, 3, grid, grid, dtype=torch.bool)
    masks[:, 0, :, : grid // 3] = True
    masks[:, 1, :, grid // 3 : 2 * grid // 3] = True
    masks[:, 2, : grid // 2] = True  # overlaps the others
    layout = build_layer_layouts(masks, (grid, grid), torch.full((77,), -1), factors=(1,))[1]
    member = layout.flat_member()
    weight = 0.3 * 0.9
    scale = DIM**-0.5
    budget = budget_mb * 2**20
    # warm up kernels on a tiny problem so one-time allocations do not count
    full_frame_attention(q[:, :64], k[:, :64], v[:, :64], 1, scale)
    base = _rss_mib()
    start = time.perf_counter()
    if variant == "naive":
        sreg = (member @ member.T) > 0  # the official (F*hw)^2 map
        size = layout.self_size(member, member, frames)
        g = (size * weight)[:, None]
        out = torch.empty_like(q)
        for h in range(HEADS):  # official: one head of one CFG branch per slice
            s = (q[h] @ k[h].T) * scale
            hi, lo = s.amax(-1, keepdim=True), s.amin(-1, keepdim=True)
            s = s + sreg * g * (hi - s)
            s = s - (~sreg) * g * (s - lo)
            out[h] = s.softmax(-1) @ v[h]
    elif variant == "ours":
        out = full_frame_attention(
            q, k, v, frames, scale, FrameSpan(), SelfModulation(member, layout.self_size, weight), budget
        )
    elif variant == "window":
        out = full_frame_attention(
            q,
            k,
            v,
            frames,
            scale,
            FrameSpan("window", 4),
            SelfModulation(member, layout.self_size, weight),
            budget,
        )
    elif variant == "plain_chunked":
        out = torch.empty_like(q)
        rows = chunk_rows(HEADS, total, 4, budget)
        for a in range(0, total, rows):
            s = torch.matmul(q[:, a : a + rows], k.transpose(-1, -2)) * scale
            out[:, a : a + rows] = s.softmax(-1) @ v
    elif variant == "sdpa":
        out = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None], scale=scale)[0]
    else:
        raise ValueError(variant)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert torch.isfinite(out).all()
    return {
        "variant": variant,
        "frames": frames,
        "grid": grid,
        "seconds": round(seconds, 3),
        "peak_mib": round(peak - base, 1),
    }


def memory_case(heads: int, dtype: str, frames: int, grid: int, span: str, budget_mb: float) -> dict:
    """Peak tensor memory of one modulated call, and the part of it the chunk budget bounds."""
    import torch

    from videoedit.attention.st_layout import FrameSpan, SelfModulation, full_frame_attention
    from videoedit.layout.regions import build_layer_layouts
    from videoedit.metrics.tensor_memory import LiveTensorBytes

    torch.manual_seed(0)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    n = grid * grid
    q, k, v = (torch.randn(heads, frames * n, DIM).to(dt) for _ in range(3))
    masks = torch.zeros(frames, 3, grid, grid, dtype=torch.bool)
    masks[:, 0, :, : grid // 3] = True
    masks[:, 1, :, grid // 3 : 2 * grid // 3] = True
    masks[:, 2, : grid // 2] = True
    layout = build_layer_layouts(masks, (grid, grid), torch.full((77,), -1), factors=(1,))[1]
    member = layout.flat_member()
    frame_span = FrameSpan(span, 4)
    budget = int(budget_mb * 2**20)
    with LiveTensorBytes() as mem:
        out = full_frame_attention(
            q, k, v, frames, DIM**-0.5, frame_span, SelfModulation(member, layout.self_size, 0.27), budget
        )
    # what the call holds besides the chunk budget (an upper bound: the largest key group)
    held = 0
    for _, key_frames in frame_span.groups(frames):
        keys = len(key_frames) * n
        gathered = 2 * heads * keys * DIM * q.element_size() if len(key_frames) < frames else 0
        converted = 2 * heads * keys * DIM * 4 if dt != torch.float32 else 0
        held = max(held, gathered + converted + keys * 3 * 8)
    held += out.numel() * out.element_size()
    return {
        "heads": heads,
        "dtype": dtype,
        "frames": frames,
        "grid": grid,
        "span": span,
        "budget_mib": budget_mb,
        "peak_mib": round(mem.peak / 2**20, 2),
        "held_mib": round(held / 2**20, 2),
        "chunk_peak_over_budget": round((mem.peak - held) / budget, 3),
    }


def memory_table(out: Path) -> None:
    cases = [
        (heads, dtype, frames, grid, span, budget)
        for heads in (1, 8)
        for dtype in ("fp32", "bf16")
        for frames, grid, span, budget in ((8, 16, "all", 8), (8, 32, "all", 32), (16, 32, "window", 32))
    ]
    rows = []
    for case in cases:
        row = memory_case(*case)
        print(row, flush=True)
        rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dim": DIM, "results": rows}, indent=2) + "\n")
    print(f"results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget-mb", type=int, default=256)
    parser.add_argument("--memory", action="store_true", help="exact tensor memory vs the chunk budget")
    parser.add_argument(
        "--case", nargs=4, metavar=("VARIANT", "FRAMES", "GRID", "BUDGET"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", default=None, help="default: st_layout.json in benchmarks/runs")
    add_record_argument(parser)
    args = parser.parse_args()
    if args.memory:
        memory_table(result_path("st_layout_memory.json", args.record, args.out))
        return
    if args.case:
        variant, frames, grid, budget = args.case
        print(json.dumps(run_case(variant, int(frames), int(grid), int(budget))))
        return
    cases = [(v, f, g) for f in (8, 16) for g in (16, 32) for v in ("sdpa", "plain_chunked", "ours", "naive")]
    cases += [("window", f, 32) for f in (8, 16, 32, 64)]
    if args.quick:
        cases = [c for c in cases if c[1] == 8 and c[2] == 16]
    results = []
    for variant, frames, grid in cases:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", variant, str(frames), str(grid), str(args.budget_mb)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        results.append(row)
    out = result_path("st_layout.json", args.record, args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"heads": HEADS, "dim": DIM, "budget_mb": args.budget_mb, "results": results}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
