"""The backbone seam: families, pre-load checks from the config and the model's own files, acceleration."""

import json
import logging

import pytest
import torch

from videoedit.backbones.base import Acceleration, VideoShapeRule, check_supported
from videoedit.backbones.stable_diffusion import StableDiffusion, TinyStableDiffusion
from videoedit.backbones.wan import TinyWan
from videoedit.config import model_configs_by_family
from videoedit.errors import ConfigError, ResolutionError
from videoedit.methods.flowedit import FlowEditMethod
from videoedit.methods.sample import SampleMethod
from videoedit.methods.tokenflow import TokenFlowMethod
from videoedit.pipelines.pipeline_video_edit import VideoEditPipeline
from videoedit.pipelines.pipeline_wan import WanVideoEditPipeline


def test_every_model_config_names_its_family():
    families = model_configs_by_family()
    assert families["sd"] == ["sd15", "sd15_random", "sd21", "tiny"]
    assert families["wan"] == [
        "wan21_1_3b_random",
        "wan21_t2v_1_3b",
        "wan21_vace_1_3b",
        "wan_tiny",
        "wan_vace_tiny",
    ]


def test_unsupported_pairs_name_the_models_that_fit():
    known = model_configs_by_family()
    check_supported(SampleMethod(), TinyWan(), known)
    check_supported(SampleMethod(), TinyStableDiffusion(), known)
    with pytest.raises(ConfigError, match=r"method=tokenflow does not run on the 'wan' backbone \(TinyWan\)"):
        check_supported(TokenFlowMethod(), TinyWan(), known)
    with pytest.raises(
        ConfigError,
        match=r"supports wan \(model=wan21_1_3b_random, model=wan21_t2v_1_3b, model=wan21_vace_1_3b, model=wan_tiny, model=wan_vace_tiny\)",
    ):
        check_supported(FlowEditMethod(), TinyStableDiffusion(), known)


def test_the_family_base_pipelines(tiny_components, tiny_wan):
    assert type(tiny_components.pipeline()) is VideoEditPipeline
    assert type(tiny_wan.pipeline()) is WanVideoEditPipeline
    assert tiny_components.denoiser is tiny_components.unet and tiny_wan.denoiser is tiny_wan.transformer


def test_the_shape_rule_comes_from_a_local_models_own_configs(tmp_path):
    folder = tmp_path / "sd"
    for sub, blocks in (("unet", [32, 64, 64]), ("vae", [32, 32, 64, 64])):  # a 3-level UNet: x8 * x4 = 32
        (folder / sub).mkdir(parents=True)
        (folder / sub / "config.json").write_text(json.dumps({"block_out_channels": blocks}))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 500}))
    local = StableDiffusion(str(folder))
    assert local.shape_rule().size_multiple == 32
    local.shape_rule().check(8, 96, 96)
    assert local.scheduler().config.num_train_timesteps == 500
    # without the folder: SD's 64, and the hint names the data config's own keys
    with pytest.raises(
        ResolutionError,
        match=r"multiples of 64. Use data.resize.height=64 data.resize.width=128, or data.resize.multiple=64",
    ):
        StableDiffusion("some-org/not-downloaded").shape_rule().check(
            8, 96, 140, {"resize": {"mode": "keep_aspect", "height": 96, "width": 140}}
        )


def test_shape_rule_frames():
    rule = VideoShapeRule(size_multiple=8, frame_multiple=4, frame_offset=1)
    assert [n for n in range(1, 14) if rule.frames_ok(n)] == [1, 5, 9, 13]
    assert rule.nearest_frames(12) == [9, 13] and rule.nearest_frames(3) == [1, 5]
    assert VideoShapeRule(size_multiple=64).frames_ok(7)


def test_acceleration_switches(tiny_components, caplog):
    pipe = tiny_components.pipeline()
    with caplog.at_level(logging.WARNING):
        Acceleration(cpu_offload="model", vae_slicing=True).apply(pipe, tiny_components, torch.device("cpu"))
    try:
        assert tiny_components.vae.use_slicing
        assert "needs CUDA: ignored" in caplog.text
    finally:
        tiny_components.vae.disable_slicing()
    with pytest.raises(
        ConfigError, match=r"model\.acceleration\.cpu_offload must be none, model or sequential"
    ):
        Acceleration(cpu_offload="all")
    with pytest.raises(ConfigError, match=r"Bad model\.acceleration settings"):
        TinyWan(acceleration={"slicing": True})


def test_the_wan_dtype_is_bf16_on_cuda_only():
    assert TinyWan().resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert TinyWan().resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert TinyStableDiffusion().resolve_dtype("auto", torch.device("cuda")) == torch.float16
