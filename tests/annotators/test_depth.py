"""Depth annotators: ControlNet normalisations, a random-weight transformers model loaded from a folder
(the real loading path), the controlnet-aux backends' fail-fast errors and resizing, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from annotators.depth import ControlnetAuxDepth, TransformersDepth, main, normalize_depth
from annotators.precomputed import PrecomputedCondition
from videoedit.errors import ConfigError, ModelLoadError


def test_minmax_is_controlnets_midas_normalisation():
    rng = np.random.default_rng(0)
    d = rng.uniform(1, 5, (2, 8, 9))
    out = normalize_depth(d, "minmax")
    for f in range(2):
        ref = ((d[f] - d[f].min()) / (d[f].max() - d[f].min()) * 255).clip(0, 255).astype(np.uint8)
        np.testing.assert_array_equal(out[f], ref)
    # inverse depth: the largest value (nearest) is white
    assert out[0].flat[d[0].argmax()] == 255


def test_inverse_percentile_is_controlnets_zoe_normalisation():
    rng = np.random.default_rng(1)
    d = rng.uniform(1, 10, (1, 16, 16))
    lo, hi = np.percentile(d[0], 2), np.percentile(d[0], 85)
    ref = ((1 - (d[0] - lo) / (hi - lo)) * 255).clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(normalize_depth(d, "inverse_percentile")[0], ref)
    # metric depth: near (small) is white
    assert normalize_depth(d, "inverse_percentile")[0].flat[d[0].argmin()] == 255


def test_video_normalisation_uses_one_range():
    d = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)])
    d[0, 0, 0] = 0.0
    per_video = normalize_depth(d, "minmax", over="video")
    assert per_video[1].min() == 255 and per_video[0, 1, 1] == 85
    with pytest.raises(ValueError, match="normalization"):
        normalize_depth(d, "nope")
    # `over` is checked before anything uses it (also ahead of the shape check)
    with pytest.raises(ValueError, match=r"over must be 'frame' or 'video', got 'clip'"):
        normalize_depth(d, over="clip")
    with pytest.raises(ValueError, match=r"over must be 'frame' or 'video'"):
        normalize_depth(d[0], over="clip")


@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory):
    """A random-weight DPT depth model + processor saved like a hub checkpoint."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    folder = tmp_path_factory.mktemp("tiny_dpt")
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        neck_hidden_sizes=[16, 16, 32, 32],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
    )
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(folder)
    return folder


def test_transformers_depth_from_a_local_folder(tiny_dpt):
    annotator = TransformersDepth(str(tiny_dpt), device="cpu")
    frames = np.random.default_rng(0).integers(0, 255, (2, 48, 80, 3), dtype=np.uint8)
    maps = annotator(frames)
    assert maps.shape == (2, 48, 80, 3) and maps.dtype == np.uint8
    assert (maps[..., 0] == maps[..., 2]).all()  # grey
    assert maps[0].min() == 0 and maps[0].max() == 255  # per-frame range (official)
    s = annotator.settings()
    assert s["normalization"] == "minmax" and s["model_type"] == "dpt" and s["condition_type"] == "depth"
    weights = tiny_dpt / "model.safetensors"
    assert s["weights"] == {
        "path": str(weights.resolve()),
        "size": weights.stat().st_size,
        "mtime_ns": weights.stat().st_mtime_ns,
    }


def test_transformers_depth_missing_model_and_bad_options(tmp_path, tiny_dpt):
    with pytest.raises(ModelLoadError, match=r"no depth model at .*annotator=precomputed"):
        TransformersDepth(str(tmp_path / "nothing"))
    # a folder with the config but no weights fails here, not when the model is first used
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text((tiny_dpt / "config.json").read_text())
    with pytest.raises(ModelLoadError, match=r"config_only has a config but no weights \(model\.safetensors"):
        TransformersDepth(str(tmp_path / "config_only"))
    # a hub id whose config is cached but not its weights (offline)
    from annotators.depth import find_transformers_weights

    with pytest.raises(ModelLoadError, match=r"no weights for owner/not-cached .*HF_HUB_OFFLINE is set"):
        find_transformers_weights("owner/not-cached")
    with pytest.raises(ConfigError, match="normalization"):
        TransformersDepth(str(tmp_path), normalization="log")


def test_controlnet_aux_depth_missing_weights(tmp_path):
    with pytest.raises(ModelLoadError, match=r"ZoeD_M12_N\.pt.*annotator=depth_anything"):
        ControlnetAuxDepth("zoe", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"hub repo lllyasviel/Annotators"):
        ControlnetAuxDepth("midas")  # offline
    with pytest.raises(ConfigError, match=r"annotator\.model"):
        ControlnetAuxDepth("dpt", str(tmp_path))


def test_controlnet_aux_depth_resizes_to_the_frames(tmp_path, monkeypatch):
    (tmp_path / "dpt_hybrid-midas-501f0c75.pt").write_bytes(b"x")
    annotator = ControlnetAuxDepth("midas", str(tmp_path), device="cpu")
    monkeypatch.setattr(annotator, "_build", lambda: lambda image, **kw: np.full((64, 96), 7, np.uint8))
    maps = annotator(np.zeros((3, 50, 70, 3), np.uint8))
    assert maps.shape == (3, 50, 70, 3) and (maps == 7).all()


def test_depth_cli(tiny_dpt, tmp_path, shared_data):
    clip = shared_data / "davis2016" / "JPEGImages" / "car-turn"
    out = tmp_path / "depth"
    main(
        [
            "--video",
            str(clip),
            "--num-frames",
            "2",
            "--backend",
            "transformers",
            "--weights",
            str(tiny_dpt),
            "--out",
            str(out),
        ]
    )
    maps = PrecomputedCondition(str(out), "depth")(np.zeros((2, 480, 854, 3), np.uint8), [0, 1])
    assert maps.shape == (2, 480, 854, 3) and maps.max() == 255
