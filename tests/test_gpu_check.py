"""``benchmarks/gpu_check.py --smoke``: every method of the GPU check composes and runs end to end (tiny model,
CPU sizes), and its results JSON and README table are written as on a GPU."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def test_smoke_runs_every_method(gpu_check, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--smoke", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["results"]] == [c.name for c in gpu_check.CHECKS]
    assert report["steps"] == 2 and report["machine"]["smoke"] is True
    for r in report["results"]:
        assert r["status"] == "ok" and r["error"] is None and r["nonfinite"] == {}, r
        assert (r["frames"], r["size"], r["dtype"]) == (5 if r["model"] == "wan_tiny" else 4, 64, "fp32")
        assert r["seconds"] > 0 and r["cpu_peak_rss_gib"] > 0 and "total" in r["timings_s"]
        assert r["within_target"] is None  # targets are GPU numbers
        assert (tmp_path / "work" / r["name"] / "COMPLETE").is_file()
    table = capsys.readouterr().out
    assert (
        "| videograin | tiny, fp32 | 4 x 64² | ok |" in table
        and "| wan_flowedit | wan_tiny, fp32 | 5 x 64² | ok |" in table
    )
    assert "<= 12 GiB" in table and "<= 24 GiB" in table


def test_full_sizes_and_targets(gpu_check, tmp_path):
    """The GPU settings the check composes: 512 px fp16 random SD-1.5, the brief's frame counts."""
    from videoedit.config import compose_config

    checks = {c.name: c for c in gpu_check.CHECKS}
    assert (checks["videograin"].frames, checks["videograin"].target_gib) == (16, 12.0)
    assert (checks["tokenflow"].frames, checks["tokenflow"].target_gib) == (120, 24.0)
    assert checks["dualflow_streaming"].frames == 64
    cfg = compose_config(gpu_check.overrides_for(checks["tokenflow"], False, 10, 50, tmp_path))
    assert cfg.model._target_.endswith("RandomStableDiffusion15") and cfg.dtype == "fp16"
    assert (cfg.data.num_frames, cfg.data.height, cfg.data.width) == (120, 512, 512)
    assert cfg.method.num_inference_steps == 10 and cfg.method.inversion.num_inversion_steps == 50
    vg = compose_config(gpu_check.overrides_for(checks["videograin"], False, 10, 50, tmp_path))
    assert vg.method.frame_span == "all" and vg.method.inject_step == 5 and vg.data.num_frames == 16
    kf = compose_config(gpu_check.overrides_for(checks["keyframe_propagate"], False, 10, 50, tmp_path))
    assert kf.method.keyframe_method.num_inference_steps == 10 and kf.method.refine.num_inference_steps == 10
    wan = compose_config(gpu_check.overrides_for(checks["wan_flowedit_layout"], False, 10, 50, tmp_path))
    assert wan.model._target_.endswith("RandomWan13B") and wan.dtype == "bf16"
    assert (wan.data.num_frames, wan.method.n_max, len(wan.prompts[0])) == (33, 7, 4)


def test_table_goes_between_the_readme_markers(gpu_check, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\nbefore\n{gpu_check.BEGIN}\nold table\n{gpu_check.END}\nafter\n")
    outcome = gpu_check.Outcome(
        "videograin", 16, 512, 10, "sd15_random", "fp16", seconds=42.0, peak_allocated_gib=9.5
    )
    outcome.peak_reserved_gib, outcome.target_gib, outcome.within_target = 10.25, 12.0, True
    table = gpu_check.markdown_table([outcome], {"torch": "2.x", "cuda": "NVIDIA H200", "smoke": False})
    gpu_check.update_readme(readme, table)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# B\n\nbefore\n") and text.endswith("after\n")
    assert (
        "| videograin | sd15_random, fp16 | 16 x 512² | ok | 9.50 GiB | 10.25 GiB | <= 12 GiB (met) | 42 s |"
        in text
    )
    assert "Machine: NVIDIA H200" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_without_cuda_it_asks_for_smoke(gpu_check, capsys):
    assert gpu_check.main([]) == 2
    assert "CUDA is not available; use --smoke" in capsys.readouterr().err
    assert gpu_check.main(["--smoke", "--record"]) == 2
    assert gpu_check.main(["--smoke", "--methods", "nope"]) == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
