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
    "torchmetrics",
    "scikit-image",
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


def _vm_hwm_bytes() -> int | None:
    """The process's peak resident memory since the last reset (Linux ``VmHWM``), or ``None``."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_memory() -> None:
    """Start a new peak-memory window: CUDA's peak stats and, on Linux, the process's peak RSS.

    Several runs share one process under a Hydra multirun (``videoedit bench``); without the reset the
    CPU peak of a run would be the largest of every run before it. Linux resets ``VmHWM`` when ``5`` is
    written to ``/proc/self/clear_refs``; elsewhere the CPU peak is the process's lifetime peak.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_memory() -> dict[str, int]:
    """Peak CUDA memory allocated by torch (if used) and the process's peak resident memory: Linux's
    ``VmHWM`` (the peak since :func:`reset_peak_memory`), else ``ru_maxrss`` (the lifetime peak)."""
    hwm = _vm_hwm_bytes()
    out = {
        "cpu_max_rss_bytes": hwm
        if hwm is not None
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    }
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
