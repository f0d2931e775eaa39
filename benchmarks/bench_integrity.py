"""Cost of the integrity checks: finite-value checks per step, cache checksums, run manifests.

    python benchmarks/bench_integrity.py                     # prints them, writes runs/integrity.json
    python benchmarks/bench_integrity.py --record            # writes results/integrity.json (else runs/)

Sizes are SD-1.5's at 512 px: latents ``(F, 4, 64, 64)``; the inversion cache entry holds 51 of them
(50 DDIM steps + the clean latents), as VideoGrain's 50-step inversion does; the result tree holds the
source and one edit of ``F`` frames at 512x512 (PNG frames + mp4s + masks).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_record_argument, machine, result_path, save

from videoedit.inversion.cache import InversionCache, tensor_digest
from videoedit.inversion.ddim import InversionOutput
from videoedit.io.result_tree import RunDirectory
from videoedit.numerics import check_finite


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    add_record_argument(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict = {"frames": args.frames, "steps": args.steps, "machine": machine()}

    latents = torch.randn(args.frames, 4, 64, 64)
    results["check_finite_latents_ms"] = round(1e3 * best_of(lambda: check_finite(latents, "latents"), 20), 3)
    cfg_batch = torch.randn(2 * args.frames, 4, 64, 64, dtype=torch.float16)
    results["check_finite_fp16_cfg_batch_ms"] = round(
        1e3 * best_of(lambda: check_finite(cfg_batch, "noise prediction"), 20), 3
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        output = InversionOutput(
            latents={t: torch.randn(args.frames, 4, 64, 64) for t in range(1, 1000, 1000 // args.steps)},
            source_latents=torch.randn(args.frames, 4, 64, 64),
        )
        entry_mb = sum(x.numel() * 4 for x in output.latents.values()) / 2**20 + latents.numel() * 4 / 2**20
        results["inversion_entry_mib"] = round(entry_mb, 1)
        results["tensor_digest_entry_s"] = round(
            best_of(lambda: [tensor_digest(x) for x in output.latents.values()], 3), 3
        )
        cache = InversionCache(tmp / "inversion")
        results["inversion_cache_save_s"] = round(best_of(lambda: cache.save("k" * 32, output), 3), 3)
        shape = tuple(output.source_latents.shape)
        results["inversion_cache_load_verified_s"] = round(
            best_of(lambda: cache.load("k" * 32, output.timesteps, shape), 3), 3
        )

        frames = np.random.default_rng(0).integers(0, 255, (args.frames, 512, 512, 3), dtype=np.uint8)
        masks = np.zeros((args.frames, 2, 512, 512), bool)
        masks[:, 0, :, :256] = True
        masks[:, 1] = ~masks[:, 0]
        run = RunDirectory(tmp / "run").start()
        start = time.perf_counter()
        run.write_config("a: 1\n")
        run.write_source(frames)
        run.write_masks(frames, masks, ["left", "right"])
        run.write_edit("edit0_seed0", frames)
        run.write_metrics({"a": 1})
        results["result_tree_write_s"] = round(time.perf_counter() - start, 3)
        files = [p for p in run.staging_dir.rglob("*") if p.is_file()]
        results["result_tree_files"] = len(files)
        results["result_tree_mib"] = round(sum(p.stat().st_size for p in files) / 2**20, 1)
        start = time.perf_counter()
        run.mark_complete()
        results["mark_complete_with_manifest_s"] = round(time.perf_counter() - start, 3)
        results["verify_s"] = round(best_of(lambda: RunDirectory(tmp / "run").verify(), 3), 3)
        assert RunDirectory(tmp / "run").verify() == []
    save(results, result_path("integrity.json", args.record))  # benchmarks/runs/ unless --record


if __name__ == "__main__":
    main()
