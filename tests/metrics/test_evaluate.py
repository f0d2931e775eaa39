"""All metrics of a run: from a finished result tree on disk (the same numbers as during the run), and a
metric that cannot be computed records why instead of failing."""

import json
import shutil

import numpy as np
import pytest

from tests.tiny_sweep import tiny_sweep
from videoedit.cli import main as cli
from videoedit.errors import ConfigError, InputError
from videoedit.metrics.evaluate import (
    SCALAR_METRICS,
    Evaluator,
    evaluate_edits,
    evaluate_run,
    find_runs,
    read_run,
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return tiny_sweep(tmp_path_factory.getbasetemp() / "tiny_sweep")


def test_metrics_from_disk_equal_the_metrics_of_the_run(sweep):
    job = sweep.folder / "0"
    recorded = json.loads((job / "metrics.json").read_text())["quality"]
    recomputed = evaluate_run(job, Evaluator(clip_model=None), write=False)
    for name, scores in recorded["edits"].items():
        for key in ("warp_error", "warp_mse", "psnr_preserved", "ssim_preserved"):
            assert recomputed["edits"][name][key] == pytest.approx(scores[key], rel=1e-6), (name, key)
    assert recomputed["source"]["warp_error"] == pytest.approx(recorded["source"]["warp_error"], rel=1e-6)
    assert recorded["edits"]["edit0_seed0"]["edited_regions"] == ["left_man", "right_man"]  # trees kept


def test_the_metrics_command_rewrites_metrics_json(sweep, tmp_path, capsys):
    job = tmp_path / "job"
    shutil.copytree(sweep.folder / "0", job)
    metrics = json.loads((job / "metrics.json").read_text())
    metrics.pop("quality")
    (job / "metrics.json").write_text(json.dumps(metrics))
    assert cli(["metrics", str(tmp_path), "--clip-model", "none"]) == 0
    assert "warp_error" in capsys.readouterr().out
    rewritten = json.loads((job / "metrics.json").read_text())
    assert rewritten["quality"]["mean"]["warp_error"] > 0
    assert rewritten["timings_s"] == metrics["timings_s"]  # the rest is kept
    assert find_runs(tmp_path) == [job]


def test_the_metrics_command_starts_from_the_runs_own_settings(sweep, tmp_path, capsys):
    job = tmp_path / "job"
    shutil.copytree(sweep.folder / "0", job)
    config = (job / "config.yaml").read_text()
    assert "occlusion_check: true" in config
    (job / "config.yaml").write_text(config.replace("occlusion_check: true", "occlusion_check: false"))
    assert cli(["metrics", str(job)]) == 0  # no flags: the recorded metrics block
    settings = json.loads((job / "metrics.json").read_text())["quality"]["settings"]
    assert settings["occlusion_check"] is False and settings["clip_model"] is None  # recorded: null
    assert settings["flow"]["backend"] == "dis"
    # flags go on top of it
    assert (
        cli(["metrics", str(job), "--flow-backend", "raft", "--raft-weights", str(tmp_path / "r.pth")]) == 2
    )
    assert "metrics.flow_backend=raft but no RAFT-large weights" in capsys.readouterr().err


def test_settings_are_checked_and_compared_without_loading_models(tmp_path):
    Evaluator(hf_cache_dir=str(tmp_path)).check()  # the defaults pass (uncached hub ids: recorded later)
    Evaluator(enabled=False, flow_backend="raft", raft_weights="/nowhere.pth").check()  # disabled
    with pytest.raises(ConfigError, match=r"metrics\.flow_backend must be one of dis, raft, auto"):
        Evaluator(flow_backend="farneback").check()
    with pytest.raises(ConfigError, match=r"metrics\.lpips_net must be one of alex, vgg, squeeze or null"):
        Evaluator(lpips_net="resnet").check()
    with pytest.raises(ConfigError, match=r"metrics\.background_protocol must be one of outside, pie_bench"):
        Evaluator(background_protocol="five").check()
    with pytest.raises(ConfigError, match=r"metrics\.lpips_weights=/nowhere/alex.pth is not a file"):
        Evaluator(lpips_weights="/nowhere/alex.pth").check()
    with pytest.raises(ConfigError, match=rf"metrics\.clip_model={tmp_path}/clip: no model folder at"):
        Evaluator(clip_model=str(tmp_path / "clip")).check()
    (tmp_path / "clip").mkdir()
    with pytest.raises(ConfigError, match=r"clip has no config.json, model.safetensors or pytorch_model.bin"):
        Evaluator(clip_model=str(tmp_path / "clip")).check()
    off = {"clip_model": None, "pickscore_model": None, "lpips_net": None, "hf_cache_dir": str(tmp_path)}
    recorded = {
        "settings": {
            "definitions": 2,
            "occlusion_check": True,
            "max_psnr": 100.0,
            "background_protocol": "outside",
            "flow": {"backend": "dis", "preset": "medium"},
            "clip_model": None,
            "pickscore_model": None,
            "lpips": None,
        }
    }
    assert Evaluator(**off).differences(recorded) == []
    # auto without RAFT weights is DIS; an uncached hub id records no model: nothing differs
    assert (
        Evaluator(**{**off, "clip_model": "x/y", "raft_weights": "/nowhere.pth"}).differences(recorded) == []
    )
    assert Evaluator(**{**off, "clip_model": "x/y", "allow_download": True, "max_psnr": 60}).differences(
        recorded
    ) == ["max_psnr: 100.0 -> 60", "clip_model: None -> 'x/y'"]
    old = {"settings": {**recorded["settings"], "definitions": None}}  # metrics of an older definition
    assert Evaluator(**off).differences(old) == ["definitions: None -> 2"]
    assert Evaluator(**off).differences({"errors": {"metrics": "boom"}}) == ["no quality metrics recorded"]
    assert Evaluator(enabled=False).differences(None) == []


def test_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    with pytest.raises(InputError, match="not a finished run folder"):
        read_run(tmp_path)
    assert cli(["metrics", str(tmp_path)]) == 2
    assert "No finished run under" in capsys.readouterr().err


def test_a_metric_that_cannot_be_computed_records_why():
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    listing = [{"name": "e", "prompt": "x", "local_prompts": []}]
    evaluator = Evaluator(
        clip_model=None, pickscore_model=None, flow_backend="raft", raft_weights="/nowhere/raft.pth"
    )
    quality = evaluator.evaluate(frames, {"e": frames}, listing, np.ones((3, 1, 32, 32), bool), ["all"])
    assert "RAFT weights not found" in quality["errors"]["temporal"]
    assert "warp_error" not in quality["edits"]["e"] and "motion_alignment" not in quality["edits"]["e"]
    assert quality["metrics"]["motion_alignment"]["unavailable"].startswith(
        "optical flow failed: FileNotFoundError"
    )
    assert quality["edits"]["e"]["preservation_skipped"].startswith("the edited regions ['all'] cover")
    assert (
        quality["metrics"]["psnr_preserved"]["unavailable"] == "the edited regions ['all'] cover every pixel"
    )
    # every metric has a record: its definition, source, unit, direction; unavailable ones say why
    assert set(quality["metrics"]) == set(SCALAR_METRICS)
    for key, record in quality["metrics"].items():
        assert record["definition"] and record["source"] and record["unit"], key
        assert record["direction"] in ("higher is better", "lower is better"), key
    assert quality["metrics"]["clip_t"]["unavailable"] == "not configured (metrics.clip_model=null)"
    # whatever goes wrong, edit() gets a record, not an exception
    broken = evaluate_edits({"no_such_key": 1}, frames, {"e": frames}, listing, None, [])
    assert "no_such_key" in broken["errors"]["metrics"]
    assert evaluate_edits({"enabled": False}, frames, {"e": frames}, listing, None, []) == {
        "skipped": "disabled (metrics.enabled=false)"
    }


def test_recomputing_keeps_the_runs_reconstruction_psnr(sweep, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(sweep.folder / "0", job)
    metrics = json.loads((job / "metrics.json").read_text())
    metrics["quality"]["reconstruction"] = {"psnr": 31.5, "definition": "d"}
    (job / "metrics.json").write_text(json.dumps(metrics))
    quality = evaluate_run(job, Evaluator(clip_model=None, pickscore_model=None, lpips_net=None))
    assert quality["reconstruction"] == {"psnr": 31.5, "definition": "d"}
    assert json.loads((job / "metrics.json").read_text())["quality"]["reconstruction"]["psnr"] == 31.5
