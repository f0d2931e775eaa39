"""End-to-end TokenFlow runs of ``edit()`` with the tiny model (PnP on woman-running, SDEdit on wolf, pose)."""

import json

import pytest

from videoedit.edit import edit
from videoedit.errors import ConfigError
from videoedit.io.video import read_video

# 4 frames at 128 px in batches of 2; 2 editing steps (981/501 -> 501, 1) on a 10-step inversion grid
SMALL = [
    "model=tiny",
    "data.num_frames=4",
    "method.batch_size=2",
    "method.num_inference_steps=2",
    "method.inversion.num_inversion_steps=10",
    "progress_bar=false",
]
CLIP_128 = ["data.resize.height=128", "data.resize.width=128"]


@pytest.fixture()
def cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tokenflow_pnp_on_woman_running(compose, tmp_path, cache_root, shared_data):
    root = tmp_path / "run"
    result = edit(compose("+experiment=tokenflow_woman_running", *SMALL, *CLIP_128), root)
    for rel in (
        "config.yaml",
        "run.log",
        "source_video.mp4",
        "infer_samples/input/00003.png",
        "sample/edit0_seed1.mp4",
        "sample/edit0_seed1/00003.png",
        "sample/comparison.mp4",
        "sample/edits.json",
        "metrics.json",
        "COMPLETE",
    ):
        assert (root / rel).is_file(), rel
    assert read_video(root / "sample" / "edit0_seed1.mp4").frames.shape == (4, 128, 128, 3)
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["method"]["name"] == "tokenflow" and metrics["method"]["variant"] == "pnp"
    assert metrics["method"]["negative_prompt"] == "ugly, blurry, low res, unrealistic, unaesthetic"
    assert metrics["method"]["inversion"]["num_inversion_steps"] == 10
    assert metrics["video"]["source_prompt"] == "a woman running" and metrics["video"]["fps"] == 20
    listing = metrics["edits"][0]
    assert listing["prompt"].startswith("a marble sculpture") and listing["steps_run"] == 2
    assert listing["first_timestep"] == 501 and len(listing["keyframes_first_step"]) == 2
    assert metrics["inversion"]["cache"] == "miss"
    assert result.edits["edit0_seed1"].shape == (4, 128, 128, 3)


def test_tokenflow_sdedit_on_wolf(compose, tmp_path, cache_root, shared_data):
    overrides = [*SMALL, "data.resize.height=64", "data.resize.width=64", "method.num_inference_steps=5"]
    result = edit(compose("+experiment=tokenflow_wolf", *overrides), tmp_path / "run")
    listing = result.metrics["edits"][0]
    assert result.metrics["method"]["variant"] == "sdedit"
    assert (listing["steps_run"], listing["first_timestep"]) == (3, 401)  # official: timesteps[int(1 - 4.5):]
    exact = edit(
        compose("+experiment=tokenflow_wolf", *overrides, "method.sdedit_start_rounding=exact"),
        tmp_path / "exact",
    )
    assert (exact.metrics["edits"][0]["steps_run"], exact.metrics["edits"][0]["first_timestep"]) == (4, 601)
    assert exact.metrics["inversion"]["cache"] == "hit"  # the editing options do not change the inversion


def test_wolf_experiment_uses_the_500_step_latents_the_official_run_loads(compose):
    # run_tokenflow_sdedit.py ignores config_sdedit.yaml's n_inversion_steps: 100 (it globs steps_*/)
    cfg = compose("+experiment=tokenflow_wolf")
    assert cfg.method.inversion.num_inversion_steps == 500 and cfg.method.variant == "sdedit"


def test_tokenflow_with_a_pose_controlnet(compose, tmp_path, cache_root):
    overrides = [*SMALL, "data.height=64", "data.width=64"]
    result = edit(compose("+experiment=tokenflow_pose", *overrides), tmp_path / "run")
    assert "precomputed openpose" in result.metrics["control"]
    assert (tmp_path / "run" / "control" / "00003.png").is_file()
    assert result.edits["edit0_seed0"].shape == (4, 64, 64, 3)


def test_schedule_mismatch_fails_before_the_inversion(compose, tmp_path, cache_root):
    cfg = compose("+experiment=tokenflow_pose", *SMALL, "method.inversion.num_inversion_steps=3")
    with pytest.raises(
        ConfigError, match=r"inversion schedule \(3 steps\) does not contain the sampling timesteps"
    ):
        edit(cfg, tmp_path / "run")
    assert not (cache_root / "inversion").exists()
