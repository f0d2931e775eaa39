"""Benchmarks write into the untracked benchmarks/runs/ unless asked to record (``--record``)."""

import ast
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
