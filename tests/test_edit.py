"""End-to-end runs of ``edit()`` with the tiny model, and every bad-input error before expensive work."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAST
from videoedit.edit import edit
from videoedit.errors import (
    ModelLoadError,
    ResolutionError,
)
from videoedit.io.masks import write_masks
from videoedit.io.result_tree import RunDirectory
from videoedit.io.video import read_video


@pytest.fixture()
def cache_root(monkeypatch, tmp_path):
    """A fresh inversion cache for this test."""
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_quick_run_writes_the_full_tree(compose, tmp_path, cache_root):
    cfg = compose("+experiment=instance_edit", *FAST)
    result = edit(cfg, tmp_path / "run")
    root = tmp_path / "run"
    for rel in (
        "config.yaml",
        "run.log",
        "source_video.mp4",
        "control/00000.png",
        "control/control.mp4",
        "masks/left_man/00000.png",
        "masks/trees/00003.png",
        "infer_samples/input/00003.png",
        "infer_samples/input.mp4",
        "infer_samples/masked_video.mp4",
        "sample/edit0_seed0.mp4",
        "sample/edit0_seed0/00003.png",
        "sample/comparison.mp4",
        "sample/edits.json",
        "metrics.json",
        "COMPLETE",
    ):
        assert (root / rel).is_file(), rel
    assert read_video(root / "source_video.mp4").frames.shape == (4, 128, 128, 3)
    assert read_video(root / "sample" / "edit0_seed0.mp4").frames.shape == (4, 128, 128, 3)
    comparison = read_video(root / "sample" / "comparison.mp4").frames
    assert comparison.shape[0] == 4 and comparison.shape[2] >= 2 * 128
    metrics = json.loads((root / "metrics.json").read_text())
    for stage in ("load_video", "load_model", "conditions", "inversion", "edit/edit0_seed0", "total"):
        assert stage in metrics["timings_s"]
    assert metrics["peak_memory"]["cpu_max_rss_bytes"] > 0
    assert metrics["seeds"] == {"seed": 42, "sample_seeds": [0]}
    assert {"torch", "diffusers", "transformers"} <= set(metrics["versions"])
    assert "revision" in metrics["git"]
    assert metrics["inversion"]["cache"] == "miss"
    assert metrics["edits"][0]["prompt"].startswith("Spiderman and Polar Bear")
    assert "inversion" in (root / "run.log").read_text()
    assert "Spiderman" in (root / "config.yaml").read_text()
    assert result.edits["edit0_seed0"].shape == (4, 128, 128, 3)


def test_a_guidance_sweep_inverts_once(compose, tmp_path, cache_root):
    first = edit(compose("+experiment=instance_edit", *FAST, "method.guidance_scale=7.5"), tmp_path / "a")
    second = edit(compose("+experiment=instance_edit", *FAST, "method.guidance_scale=3"), tmp_path / "b")
    assert first.metrics["inversion"]["cache"] == "miss"
    assert second.metrics["inversion"]["cache"] == "hit"
    assert "inversion cache hit" in (tmp_path / "b" / "run.log").read_text()
    assert not np.array_equal(first.edits["edit0_seed0"], second.edits["edit0_seed0"])
    # what determines the inversion changes the key
    third = edit(compose("+experiment=instance_edit", *FAST, "data.prompt=two robots"), tmp_path / "c")
    assert third.metrics["inversion"]["cache"] == "miss"
    off = edit(compose("+experiment=instance_edit", *FAST, "cache_inversion=false"), tmp_path / "d")
    assert off.metrics["inversion"]["cache"] == "off"


def test_seeds_and_prompts_give_one_edit_each(compose, tmp_path, cache_root):
    cfg = compose(*FAST, "prompts=[a red car,a blue car]", "sample_seeds=[1,2]", "controlnet=none")
    result = edit(cfg, tmp_path / "run")
    assert sorted(result.edits) == ["edit0_seed1", "edit0_seed2", "edit1_seed1", "edit1_seed2"]
    listing = json.loads((tmp_path / "run" / "sample" / "edits.json").read_text())
    assert [e["seed"] for e in listing] == [1, 2, 1, 2]
    assert not (tmp_path / "run" / "control").exists()


def test_an_interrupted_run_never_looks_finished(compose, tmp_path, cache_root, monkeypatch):
    root = tmp_path / "run"
    edit(compose(*FAST), root)
    assert RunDirectory.is_complete(root)

    from videoedit.methods.ddim import DDIMMethod

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    metrics = (root / "metrics.json").read_bytes()
    monkeypatch.setattr(DDIMMethod, "edit", crash)
    with pytest.raises(KeyboardInterrupt):
        edit(compose(*FAST, "force=true"), root)
    assert not RunDirectory.is_complete(root)
    # the killed run wrote only into .incomplete/ (cleared by the next run), never beside the old tree
    assert (root / ".incomplete" / "source_video.mp4").is_file()
    assert (root / "metrics.json").read_bytes() == metrics


def test_run_two_man_with_shared_masks(compose, tmp_path, cache_root, shared_data):
    cfg = compose(
        "+experiment=instance_edit",
        "model=tiny",
        "controlnet=canny",
        "data.num_frames=3",
        "data.resize.height=128",
        "data.resize.width=128",
        "method.num_inference_steps=2",
        "progress_bar=false",
    )
    result = edit(cfg, tmp_path / "run")
    assert result.metrics["video"]["regions"] == ["left_man", "right_man", "trees"]
    assert "CannyAnnotator" in result.metrics["control"]
    masks = np.asarray(Image.open(tmp_path / "run" / "masks" / "left_man" / "00000.png"))
    assert masks.shape == (128, 128) and 0.1 < (masks > 0).mean() < 0.4


# ----------------------------------------------------------------------------- errors before work
# The table of bad inputs is tests/test_bad_inputs.py; below are the cases that need more than a row.


def _clip_with_masks(tmp_path: Path, mask_size=(64, 64), drop_frame=None):
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    (tmp_path / "clip").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "clip" / f"{i:05d}.png")
    masks = np.zeros((3, 2, *mask_size), bool)
    masks[:, 0, :, : mask_size[1] // 2] = True
    masks[:, 1] = ~masks[:, 0]
    write_masks(tmp_path / "masks", masks, ["left", "right"], [0, 1, 2])
    if drop_frame is not None:
        (tmp_path / "masks" / "right" / f"{drop_frame:05d}.png").unlink()
    return [
        "data=video",
        f"data.path={tmp_path / 'clip'}",
        f"data.masks_dir={tmp_path / 'masks'}",
        "data.regions=[left,right]",
        "data.resize.height=64",
        "data.resize.width=64",
        "model=sd15",
        "controlnet=none",
    ]


def test_controlnet_without_condition_maps(compose, tmp_path, shared_data, monkeypatch):
    # the openpose ControlNet brings the official dwpose annotator: without its packages/weights it fails
    # right after the (tiny) model loads, before any inversion, naming the offline alternative
    from videoedit.methods.inverting import InversionEditMethod

    def no_inversion(*args, **kwargs):
        raise AssertionError("inverted before the annotator was built")

    monkeypatch.setattr(InversionEditMethod, "invert", no_inversion)
    cfg = compose("+experiment=instance_edit", "model=tiny")
    with pytest.raises(ModelLoadError, match=r"DWPose.*annotator=pose_mediapipe"):
        edit(cfg, tmp_path / "run")
    # with model=sd15 (no weights here) the model's own message comes first, as the README promises
    with pytest.raises(ModelLoadError, match=r"stable-diffusion-v1-5.*model=tiny"):
        edit(compose("+experiment=instance_edit", "model=sd15"), tmp_path / "run")


def test_clip_model_auto_never_fails_before_the_models(compose, tmp_path):
    # auto finds nothing or something: never an error (a recorded skip); then the model is what fails.
    # (metric settings that are errors are rows of tests/test_bad_inputs.py)
    base = ["+experiment=instance_edit", "data=two_figures", "model=sd15"]  # sd15: no weights here
    with pytest.raises(ModelLoadError, match="stable-diffusion-v1-5"):
        edit(compose(*base, "metrics.clip_model=auto"), tmp_path / "run")
    with pytest.raises(ModelLoadError, match="stable-diffusion-v1-5"):  # a hub id not cached: recorded, later
        edit(compose(*base, "metrics.clip_model=owner/no-clip"), tmp_path / "run")


def test_the_annotator_fails_before_masks_are_built_from_prompts(compose, tmp_path, monkeypatch):
    from annotators.masks import VideoMaskBuilder

    clip = _clip_with_masks(tmp_path)[1].split("=", 1)[1]
    (tmp_path / "p.yaml").write_text("regions:\n  left: [{frame: 0, box: [0, 0, 30, 60]}]\n")

    def no_masks(*args, **kwargs):
        raise AssertionError("masks were built before the annotator was checked")

    monkeypatch.setattr(VideoMaskBuilder, "build", no_masks)
    overrides = [
        "data=video_sam",
        f"data.path={clip}",
        f"data.mask_builder.prompts={tmp_path / 'p.yaml'}",
        "data.resize.height=64",
        "data.resize.width=64",
        "model=sd15",
    ]
    # the openpose ControlNet's default annotator (dwpose) cannot load here
    with pytest.raises(ModelLoadError, match=r"DWPose.*annotator=pose_mediapipe"):
        edit(compose(*overrides), tmp_path / "run")
    # maps given in data.conditions: no annotator is needed, the data is read (and its masks built)
    with pytest.raises(AssertionError, match="masks were built"):
        edit(compose(*overrides, f"+data.conditions.openpose={clip}"), tmp_path / "run2")


def test_weights_not_found(compose, tmp_path):
    cfg = compose("+experiment=instance_edit", "data=two_figures", "model=sd15")
    with pytest.raises(ModelLoadError, match=r"stable-diffusion-v1-5/stable-diffusion-v1-5.*model=tiny"):
        edit(cfg, tmp_path / "run")
    assert not RunDirectory.is_complete(tmp_path / "run")


def test_resolution_the_unet_cannot_take(compose, tmp_path):
    cfg = compose(*FAST, "data.height=96", "data.width=128")
    with pytest.raises(ResolutionError, match=r"Frames are 128x96 .* multiples of 64"):
        edit(cfg, tmp_path / "run")
