"""The Wan 2.1 backbone end to end through ``edit()``: FlowEdit, region-aware FlowEdit, plain sampling on both
backbones, pose/depth control through Wan VACE, and every bad input of the video-DiT path, raised before any model
is built."""

import json
import time

import numpy as np
import pytest

from tests.conftest import FAST, WAN_FAST, WAN_TINY
from videoedit.backbones.wan import TinyWan
from videoedit.edit import edit
from videoedit.errors import ConfigError, ModelLoadError, PromptError, ResolutionError
from videoedit.io.video import read_video

LAYOUT_PROMPT = "prompts=[[an astronaut and a robot jogging in a park,an astronaut,a robot]]"


def test_flowedit_writes_the_full_tree(compose, tmp_path):
    cfg = compose("+experiment=wan_flowedit_two_figures", *WAN_FAST, "data.prompt=two men jogging in a park")
    result = edit(cfg, tmp_path / "run")
    root = tmp_path / "run"
    for rel in (
        "config.yaml",
        "run.log",
        "source_video.mp4",
        "masks/left_man/00004.png",
        "infer_samples/reconstruction.mp4",
        "sample/edit0_seed0.mp4",
        "sample/edit0_seed0/00004.png",
        "sample/comparison.mp4",
        "sample/edits.json",
        "metrics.json",
        "COMPLETE",
    ):
        assert (root / rel).is_file(), rel
    assert read_video(root / "sample" / "edit0_seed0.mp4").frames.shape == (5, 64, 64, 3)
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["method"]["name"] == "flowedit" and metrics["method"]["n_max"] == 3
    assert metrics["model"]["family"] == "wan" and metrics["model"]["dtypes"]["vae"] == "float32"
    assert metrics["inversion"] == {"cache": "none", "inversion_free": True, "latent_shape": [1, 16, 2, 8, 8]}
    assert metrics["quality"]["reconstruction"]["definition"].startswith("VAE encode/decode round trip")
    assert 0 < metrics["quality"]["reconstruction"]["psnr"] < 100
    assert metrics["edits"][0]["steps_run"] == 3
    assert "is ignored" not in (root / "run.log").read_text()  # controlnet=none: nothing to ignore
    assert result.edits["edit0_seed0"].shape == (5, 64, 64, 3)


def test_region_aware_flowedit(compose, tmp_path):
    result = edit(
        compose(
            *WAN_FAST,
            "method=flowedit_layout",
            "method.num_inference_steps=4",
            "method.n_max=3",
            LAYOUT_PROMPT,
            "data.prompt=two men jogging in a park",
        ),
        tmp_path / "run",
    )
    edit0 = result.metrics["edits"][0]
    assert edit0["local_prompt_spans"][0] is not None and edit0["local_prompt_spans"][1] is not None
    assert result.metrics["method"]["layout"]["sreg"] == 0.3
    plain = edit(
        compose(
            *WAN_FAST,
            "method.num_inference_steps=4",
            "method.n_max=3",
            LAYOUT_PROMPT,
            "data.prompt=two men jogging in a park",
        ),
        tmp_path / "plain",
    )
    # outside the union of the regions the region-aware edit keeps the source's latents; plain FlowEdit does not
    assert (result.edits["edit0_seed0"] != plain.edits["edit0_seed0"]).any()


@pytest.mark.parametrize("overrides", [WAN_TINY, [*FAST, "controlnet=none"]], ids=["wan", "sd"])
def test_plain_sampling_on_both_backbones(compose, tmp_path, overrides):
    result = edit(compose(*overrides, "method=sample", "method.num_inference_steps=2"), tmp_path / "run")
    frames = result.edits["edit0_seed0"]
    assert frames.shape[0] == result.metrics["video"]["frames"]
    assert result.metrics["inversion"] == {"cache": "none", "plain_sampling": True}
    assert (tmp_path / "run" / "COMPLETE").is_file()


@pytest.fixture()
def no_model_loads(monkeypatch):
    """Every bad input below must be caught before a model is built."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the bad input was caught")

    monkeypatch.setattr(TinyWan, "load", refuse)
    from videoedit.backbones.stable_diffusion import TinyStableDiffusion

    monkeypatch.setattr(TinyStableDiffusion, "load", refuse)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            [*WAN_FAST, "data.num_frames=8"],
            ResolutionError,
            r"has 8 frames, but Wan 2.1 needs 4k\+1 frames .* Use data.num_frames=5 \(nearest valid: 5 or 9\)",
        ),
        (
            [*WAN_FAST, "data.height=72"],
            ResolutionError,
            r"multiples of 16. Use data.height=64 data.width=64",
        ),
        (
            [*WAN_FAST, "model=tiny"],
            ConfigError,
            r"method=flowedit does not run on the 'sd' backbone .* supports wan \(model=wan21_1_3b_random, model=wan21_t2v_1_3b, model=wan21_vace_1_3b, model=wan_tiny, model=wan_vace_tiny\)",
        ),
        (
            [*WAN_TINY, "method=videograin"],
            ConfigError,
            r"method=videograin does not run on the 'wan' backbone .* supports sd \(model=sd15, model=sd15_random, model=sd21, model=tiny\)",
        ),
        (
            [*WAN_FAST, "method.n_max=9"],
            ConfigError,
            r"n_min <= n_max <= num_inference_steps, got n_min=0, n_max=9",
        ),
        (
            [*WAN_TINY, "method=flowedit_layout", "prompts=[[an astronaut jogging,a robot]]"],
            PromptError,
            r"Local prompt 1 'a robot' is not part of the full prompt",
        ),
    ],
    ids=["frames", "size", "flowedit-on-sd", "videograin-on-wan", "n_max", "local-prompt"],
)
def test_bad_inputs_before_any_model(compose, tmp_path, no_model_loads, overrides, error, message):
    with pytest.raises(error, match=message):
        edit(compose(*overrides), tmp_path / "run")


def test_real_wan_without_weights_fails_fast_naming_the_tiny_override(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"Wan-AI/Wan2.1-T2V-1.3B-Diffusers.*model=wan_tiny"):
        edit(
            compose(
                "+experiment=wan_flowedit_two_figures", "data.num_frames=5", "data.height=64", "data.width=64"
            ),
            tmp_path / "run",
        )
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "run" / "COMPLETE").exists()


# ----------------------------------------------------------------------------------------- Wan VACE control

# the pose experiment on the tiny VACE twin and the project's clip (it ships its own skeletons: no annotator runs)
VACE_TINY = [
    "+experiment=wan_flowedit_pose",
    "model=wan_vace_tiny",
    *[o for o in WAN_TINY if not o.startswith(("model=", "controlnet="))],
]
VACE_POSE = [*VACE_TINY, "method.num_inference_steps=4", "method.n_max=3"]


def test_vace_flowedit_with_pose_control(compose, tmp_path):
    result = edit(compose(*VACE_POSE), tmp_path / "run")
    root = tmp_path / "run"
    for rel in (
        "control/00000.png",
        "control/00004.png",
        "control/control.mp4",
        "sample/edit0_seed0.mp4",
        "COMPLETE",
    ):
        assert (root / rel).is_file(), rel
    assert read_video(root / "control" / "control.mp4").frames.shape == (5, 64, 64, 3)
    metrics = result.metrics
    assert metrics["control"] == "precomputed openpose maps from the data"
    assert metrics["model"]["vace"] is True and metrics["model"]["model"].startswith("wan_vace_tiny")
    assert metrics["experiment"] == "wan_flowedit_pose" and metrics["edits"][0]["steps_run"] == 3
    assert "is ignored" not in (root / "run.log").read_text()

    # the control changes the edit; at conditioning scale 0 the VACE twin is wan_tiny, on which the maps are ignored
    off = edit(compose(*VACE_POSE, "controlnet.conditioning_scale=0"), tmp_path / "off")
    assert np.abs(off.edits["edit0_seed0"].astype(int) - result.edits["edit0_seed0"].astype(int)).max() > 0
    t2v = edit(compose(*VACE_POSE, "model=wan_tiny"), tmp_path / "t2v")
    np.testing.assert_array_equal(t2v.edits["edit0_seed0"], off.edits["edit0_seed0"])
    log = (tmp_path / "t2v" / "run.log").read_text()
    assert (
        "method=flowedit on the 'wan' backbone (TinyWan) uses no condition maps: controlnet=openpose is ignored "
        "(pose/depth/canny control on Wan needs its VACE model: model=wan21_vace_1_3b" in log
    )
    assert t2v.metrics["control"] == "none (no ControlNet)" and not (tmp_path / "t2v" / "control").exists()


def test_plain_sampling_on_vace_uses_the_depth_maps(compose, tmp_path):
    overrides = [*VACE_TINY, "controlnet=depth", "method=sample", "method.num_inference_steps=2"]
    result = edit(compose(*overrides), tmp_path / "run")
    assert result.metrics["control"] == "precomputed depth maps from the data"
    assert (tmp_path / "run" / "control" / "control.mp4").is_file()
    free = edit(compose(*overrides, "controlnet=none"), tmp_path / "free")  # VACE's empty context
    assert free.metrics["control"] == "none (no ControlNet)"
    assert (free.edits["edit0_seed0"] != result.edits["edit0_seed0"]).any()


def test_real_vace_without_weights_fails_fast_naming_the_tiny_override(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"Wan-AI/Wan2.1-VACE-1.3B-diffusers.*model=wan_vace_tiny"):
        edit(compose("+experiment=wan_flowedit_pose", *WAN_TINY[2:]), tmp_path / "run")
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "run" / "COMPLETE").exists()
