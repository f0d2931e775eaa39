"""Run facts for ``metrics.json``: stage timings, peak memory, library versions, git revision."""

from __future__ import annotations

import contextlib
import importlib.metadata
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

_PACKAGES = (
    "videoedit",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "accelerate",
    "hydra-core",
    "numpy",
)


class StageTimer:
    """Collects wall-clock seconds per named stage (CUDA work is synchronised at stage ends)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def summary(self) -> dict[str, float]:
        return {
            **{k: round(v, 3) for k, v in self.seconds.items()},
            "total": round(time.perf_counter() - self._start, 3),
        }


def reset_peak_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, int]:
    """Peak CUDA memory allocated by torch (if used) and the process's peak resident memory."""
    out = {"cpu_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        out["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    return out


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(path: str | Path | None = None) -> dict[str, str | bool | None]:
    """The git commit of the project checkout (and whether it has uncommitted changes)."""
    cwd = Path(path) if path else Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
        return {"revision": rev, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}
