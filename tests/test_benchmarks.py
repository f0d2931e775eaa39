"""Benchmarks write into the untracked benchmarks/runs/ unless asked to record (``--record``)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_benchmark_has_the_record_switch_and_no_tracked_default(script):
    source = script.read_text()
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "add_record_argument" in calls, f"{script.name} has no --record switch"
    # nothing names the tracked folder directly: results go through result_path()/results_dir()
    assert '/ "results"' not in source and "'results'" not in source, script.name


def test_result_paths():
    from common import RECORDED, SCRATCH, result_path

    assert result_path("x.json", record=False) == SCRATCH / "x.json"
    assert result_path("x.json", record=True) == RECORDED / "x.json"
    assert result_path("x.json", record=True, out="/tmp/y.json") == Path("/tmp/y.json")
    assert RECORDED == ROOT / "benchmarks" / "results" and SCRATCH == ROOT / "benchmarks" / "runs"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "benchmarks/runs/x.json"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0  # untracked scratch results never show up in git status


def test_subcommand_scripts_take_record_after_the_subcommand():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_dualflow.py"), "warp", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--record" in proc.stdout


def test_bench_wan_measures_a_step_not_the_model_load():
    """The layout case runs end to end at a toy size, and its peak is the call's, reset after setup: a
    16 MiB ballast allocated and freed before the reset does not count."""
    import bench_wan

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_wan.py"),
            "layout",
            "--case",
            "ours",
            "2",
            "4",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["variant"] == "ours" and row["tokens"] == 2 * 4 * 4 and row["seconds"] >= 0

    ballast = bytearray(16 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
    del ballast
    bench_wan._reset_peak()
    assert bench_wan._peak_mib() - bench_wan._rss_mib() < 8


def test_bench_wan_ratios():
    import bench_wan

    rows = [
        {"model": "m", "variant": "sample", "seconds": 2.0, "peak_mib": 10.0, "process_peak_mib": 100.0},
        {"model": "m", "variant": "flowedit", "seconds": 3.9, "peak_mib": 11.0, "process_peak_mib": 101.0},
        {"model": "t", "variant": "sample", "seconds": 1.0, "peak_mib": 0.1, "process_peak_mib": 50.0},
        {"model": "t", "variant": "flowedit", "seconds": 2.0, "peak_mib": 0.3, "process_peak_mib": 50.0},
    ]
    assert bench_wan._ratios(rows, "sample", "model") == {
        "m": {"flowedit": {"time": 1.95, "memory_step": 1.1, "memory_process": 1.01}},
        "t": {"flowedit": {"time": 2.0, "memory_step": None, "memory_process": 1.0}},  # below noise: none
    }
