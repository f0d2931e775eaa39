"""Helpers shared by the benchmark scripts (not imported by the package).

Where results go: every script writes into ``benchmarks/runs/`` (untracked, ignored by git) unless it is
run with ``--record``, which writes into ``benchmarks/results/`` (tracked: the numbers
``benchmarks/README.md`` quotes). An explicit ``--out`` always wins.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
RECORDED = BENCHMARKS / "results"  # tracked: what benchmarks/README.md quotes
SCRATCH = BENCHMARKS / "runs"  # untracked (.gitignore): every run without --record


def add_record_argument(parser: argparse.ArgumentParser) -> None:
    """``--record``: write into ``benchmarks/results/`` (tracked) instead of ``benchmarks/runs/``."""
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the results into benchmarks/results/ (tracked, quoted by benchmarks/README.md); "
        "default: benchmarks/runs/ (untracked)",
    )


def results_dir(record: bool) -> Path:
    """``benchmarks/results`` with ``--record``, else ``benchmarks/runs``."""
    return RECORDED if record else SCRATCH


def result_path(name: str, record: bool, out: str | Path | None = None) -> Path:
    """Where a result file goes: ``out`` if given, else ``name`` in :func:`results_dir`."""
    return Path(out) if out else results_dir(record) / name


class ForwardClock:
    """Accumulates the wall time spent inside the forwards of some modules (via hooks)."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._start: dict[int, float] = {}
        self._handles = []
        for m in modules:
            if m is None:
                continue
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))

    def _pre(self, module, args):
        self._start[id(module)] = time.perf_counter()

    def _post(self, module, args, output):
        self.seconds += time.perf_counter() - self._start.pop(id(module))
        self.calls += 1

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@contextlib.contextmanager
def timed(results: dict, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[name] = round(time.perf_counter() - start, 3)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def save(results: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
