"""VideoGrain end to end with the tiny model, and its input checks."""

import json

import numpy as np
import pytest

from tests.conftest import FAST
from videoedit.edit import edit
from videoedit.errors import ConfigError, PromptError
from videoedit.io.video import read_video


@pytest.fixture()
def cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))


def test_instance_edit_with_every_option_writes_the_full_tree(compose, tmp_path, cache_root):
    cfg = compose(
        "+experiment=instance_edit",
        *FAST,
        "method.inject_step=2",
        "method.vis_cross_attn=true",
        "method.cluster_inversion_feature=true",
        "method.flow_backend=dis",
    )
    result = edit(cfg, tmp_path / "run")
    root = tmp_path / "run"
    for rel in (
        "sample/edit0_seed0.mp4",
        "sample/comparison.mp4",
        "sample/visualization_denoise/edit0_seed0/cross_attn.mp4",
        "sample/visualization_denoise/edit0_seed0/frame_0_cross_attn.png",
        "sd_study/pca_attn_8_0.png",  # factor-2 maps of 128 px frames: 8x8 tokens
        "sd_study/cluster_attn_8_3.png",
        "sd_study/cluster_attn_8_inv_self.npy",
        "sd_study/cross_attn.mp4",
        "attn_inv/inv_self_avg_8.npy",
        "attn_inv/inv_cross_avg_8.npy",
        "masks/right_man/00000.png",
        "infer_samples/masked_video.mp4",
        "COMPLETE",
    ):
        assert (root / rel).is_file(), rel
    labels = np.load(root / "sd_study" / "cluster_attn_8_inv_self.npy")
    assert labels.shape == (4, 8, 8) and set(np.unique(labels)) <= {0, 1, 2}
    maps = np.load(root / "attn_inv" / "inv_self_avg_8.npy")
    assert maps.shape == (4, 64, 64)
    assert np.all(maps.sum(-1) <= 1 + 1e-5)  # diagonal blocks of full-frame softmax rows
    assert list(
        root.glob("sd_study/frame_0_cluster*_*.png")
    )  # clusters matched to words of the source prompt
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["method"]["name"] == "videograin"
    assert metrics["method"]["modulation"]["self_branch"] == "uncond"
    assert metrics["edits"][0]["local_prompt_spans"] == [[1, 2], [3, 5], [9, 11]]
    assert result.edits["edit0_seed0"].shape == (4, 128, 128, 3)


def test_second_edit_reuses_inversion_and_pnp_features(compose, tmp_path, cache_root):
    base = ["+experiment=instance_edit", *FAST, "method.inject_step=2", "method.flow_backend=dis"]
    first = edit(compose(*base), tmp_path / "a")
    second = edit(compose(*base, "method.modulation.sreg=0.6"), tmp_path / "b")
    assert (first.metrics["inversion"]["cache"], second.metrics["inversion"]["cache"]) == ("miss", "hit")
    assert not np.array_equal(first.edits["edit0_seed0"], second.edits["edit0_seed0"])
    # what VideoGrain records during inversion is part of the key
    third = edit(compose(*base, "method.inject_step=1"), tmp_path / "c")
    assert third.metrics["inversion"]["cache"] == "miss"


@pytest.mark.parametrize(
    "overrides",
    [
        ["method.frame_span=window", "method.window_size=2", "method.flatten_factors=[]"],
        ["method.blending_percentage=0.34", "method.skip_mode=consistent", "method.blend_source=inverted"],
        [
            "method.blending_percentage=0.34",
            "method.modulation.mask_downsample=max",
            "method.modulation.self_branch=both",
        ],
        ["method.inject_step=3", "method.pnp_alignment=same", "method.negative_prompt_target=both"],
        ["method.use_freeu=true", "method.flatten_factors=[1,2]"],
        [  # consistent self-attention on the up blocks + VideoGrain's cross-attention modulation
            "method.self_attention={sampling_rate:0.5,tile_size:2,during_inversion:true}",
        ],
    ],
)
def test_switches_run(compose, tmp_path, cache_root, overrides):
    cfg = compose("+experiment=instance_edit", *FAST, "method.flow_backend=dis", *overrides)
    assert edit(cfg, tmp_path / "run").edits["edit0_seed0"].shape == (4, 128, 128, 3)


def test_shared_run_two_man_clip(compose, tmp_path, cache_root, shared_data):
    cfg = compose(
        "+experiment=instance_edit",
        "model=tiny",
        "controlnet=canny",
        "data.num_frames=3",
        "data.resize.height=128",
        "data.resize.width=128",
        "method.num_inference_steps=2",
        "method.inject_step=1",
        "method.flow_backend=dis",
        "progress_bar=false",
    )
    edit(cfg, tmp_path / "run")
    frames = read_video(tmp_path / "run" / "sample" / "edit0_seed0.mp4").frames
    assert frames.shape == (3, 128, 128, 3)
    source = read_video(tmp_path / "run" / "source_video.mp4").frames
    masks = np.stack(
        [
            np.asarray(__import__("PIL.Image").Image.open(tmp_path / "run" / "masks" / r / "00001.png")) > 0
            for r in ("left_man", "right_man", "trees")
        ]
    )
    uncovered = ~masks.any(0)  # the ground: blended back to the (re-noised) source every step
    assert uncovered.mean() > 0.05
    diff_out = np.abs(frames[1].astype(float) - source[1]).mean(-1)
    assert diff_out[uncovered].mean() < diff_out[~uncovered].mean()


def test_more_local_prompts_than_regions_fails_before_the_model(compose, tmp_path):
    cfg = compose(
        "+experiment=instance_edit", "data=two_figures", "model=sd15", "prompts=[[a b c d e,a,b,c,d]]"
    )
    with pytest.raises(
        PromptError, match=r"has 4 local prompts \['a', 'b', 'c', 'd'\] but the data has 3 regions"
    ):
        edit(cfg, tmp_path / "run")


def test_local_prompt_missing_from_the_full_prompt_fails_before_the_model(compose, tmp_path):
    cfg = compose(
        "+experiment=instance_edit",
        "data=two_figures",
        "model=sd15",
        "prompts=[[Spiderman and Polar Bear,man,Polar Bear]]",
    )
    with pytest.raises(PromptError, match="Local prompt 1 'man' is not part of the full prompt"):
        edit(cfg, tmp_path / "run")


def test_videograin_needs_masks(compose, tmp_path, shared_data):
    cfg = compose(
        "+experiment=instance_edit",
        "data=video",
        f"data.path={shared_data / 'clips' / 'wolf.mp4'}",
        "model=sd15",
    )
    with pytest.raises(ConfigError, match="needs region masks"):
        edit(cfg, tmp_path / "run")


def test_videograin_needs_all_frames_in_one_batch(compose, tmp_path):
    with pytest.raises(ConfigError, match="frame_batch_size must be null"):
        edit(compose("+experiment=instance_edit", "method.inversion.frame_batch_size=2"), tmp_path / "run")


def test_bad_visualisation_factors_are_refused(compose, tmp_path, cache_root):
    with pytest.raises(ConfigError, match="cluster_factor=3 is not a resolution of this UNet"):
        edit(
            compose(
                "+experiment=instance_edit",
                *FAST,
                "method.cluster_inversion_feature=true",
                "method.cluster_factor=3",
            ),
            tmp_path / "a",
        )
