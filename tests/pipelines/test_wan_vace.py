"""Wan VACE on the tiny model: the control latents against a direct computation and diffusers' own
``WanVACEPipeline``, the velocity with control, FlowEdit with control against the reference algorithm, layout
processors that leave the control branch alone, and bad inputs."""

import os

import numpy as np
import pytest
import torch
from diffusers import WanVACEPipeline
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from tests.pipelines.test_flowedit import reference_flowedit
from videoedit.attention.wan_layout import DiTLayoutSettings
from videoedit.errors import ConfigError, ModelLoadError
from videoedit.models.wan import TINY_VACE, build_tiny_wan
from videoedit.pipelines.pipeline_flowedit import FlowEditPipeline, FlowEditSettings

FRAMES, SIZE = 5, 64


@pytest.fixture(scope="module")
def vace():
    return build_tiny_wan(
        seed=0, tokenizer_cache_dir=os.environ["VIDEOEDIT_CACHE_ROOT"] + "/tokenizer", vace=True
    )


@pytest.fixture(scope="module")
def pipe(vace):
    p = FlowEditPipeline.from_components(vace)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def maps():
    """Condition maps ``(F, H, W, 3)`` uint8, as annotators give them."""
    return np.random.default_rng(0).integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def source_latents(pipe):
    frames = torch.rand(FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return pipe.encode_video(frames)


def _normalised_encode(vae, video):
    """The VAE's posterior mode of ``video (1, 3, F, H, W)``, normalised by its per-channel mean and std."""
    latents = vae.encode(video).latent_dist.mode()
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape)
    std = torch.tensor(vae.config.latents_std).view(shape)
    return (latents - mean) / std


@torch.no_grad()
def test_control_latents_match_the_direct_formula(vace, pipe, maps):
    """Full mask: [E(grey video), E(control video), 64 channels of ones]."""
    video = torch.from_numpy(maps).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # (1, 3, F, H, W)
    inactive = _normalised_encode(vace.vae, torch.zeros_like(video))
    reactive = _normalised_encode(vace.vae, video)
    mask = torch.ones(1, 64, inactive.shape[2], SIZE // 8, SIZE // 8)
    expected = torch.cat([inactive, reactive, mask], dim=1)

    control = pipe.prepare_control(maps, 0.7, FRAMES, SIZE, SIZE)
    assert control.latents.shape == (1, 96, 2, 8, 8) == expected.shape
    assert (control.latents - expected).abs().max().item() <= 1e-5
    assert torch.equal(control.scale, torch.full((len(TINY_VACE["vace_layers"]),), 0.7))


@pytest.mark.parametrize("full", [True, False], ids=["full-mask", "partial-mask"])
@torch.no_grad()
def test_control_latents_match_diffusers_wan_vace_pipeline(vace, pipe, maps, full):
    """The same latents as diffusers' ``prepare_video_latents`` + ``prepare_masks`` (no reference images)."""
    video = torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 127.5 - 1  # (F, 3, H, W)
    mask = (
        torch.ones(FRAMES, SIZE, SIZE)
        if full
        else (torch.rand(FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) > 0.5).float()
    )
    official = WanVACEPipeline(
        tokenizer=vace.tokenizer,
        text_encoder=vace.text_encoder,
        vae=vace.vae,
        scheduler=vace.scheduler,
        transformer=vace.transformer,
    )
    v = video.permute(1, 0, 2, 3)[None]  # (1, 3, F, H, W)
    m = mask[None, None].expand(1, 3, -1, -1, -1)  # what its preprocess_conditions gives
    expected = torch.cat(
        [official.prepare_video_latents(v, m, [[]], device="cpu"), official.prepare_masks(m, [[]])], dim=1
    )
    ours = pipe.vace_control_latents(video, None if full else mask)
    assert ours.shape == expected.shape == (1, 96, 2, 8, 8)
    assert (ours - expected).abs().max().item() <= 1e-5
    if not full:  # the packed mask really is the mask: s*i + j <- pixel (s*y + i, s*x + j) of frame 1
        assert torch.equal(ours[0, 32 + 8 * 3 + 5, 0], mask[1, 3::8, 5::8])


@torch.no_grad()
def test_velocity_passes_the_control(vace, pipe, maps, source_latents, tiny_wan):
    emb = pipe.encode_prompt(["two men jogging", "a park"])
    x = torch.cat([source_latents, torch.randn_like(source_latents)])
    control = pipe.prepare_control(maps, 1.0, FRAMES, SIZE, SIZE)
    v = pipe.velocity(x, 500.0, emb, control)
    direct = vace.transformer(
        hidden_states=x[1:],
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=emb[1:],
        control_hidden_states=control.latents,
        control_hidden_states_scale=control.scale,
        return_dict=False,
    )[0]
    assert (v[1:] - direct).abs().max().item() <= 1e-5  # the control is broadcast over the batch
    assert (
        v - pipe.velocity(x, 500.0, emb, pipe.prepare_control(None, 1.0, FRAMES, SIZE, SIZE))
    ).abs().max() > 1e-3
    # scale 0: the hints vanish and the VACE twin is the T2V twin (the same blocks, weight for weight)
    plain = FlowEditPipeline.from_components(tiny_wan).velocity(x, 500.0, emb)
    zero = pipe.prepare_control(maps, 0.0, FRAMES, SIZE, SIZE)
    assert (pipe.velocity(x, 500.0, emb, zero) - plain).abs().max().item() <= 1e-5


class _Controlled:
    """The pipeline's velocity with one control bound (what the reference FlowEdit calls)."""

    def __init__(self, pipe, control):
        self.pipe, self.control, self.scheduler = pipe, control, pipe.scheduler

    def encode_prompt(self, prompts):
        return self.pipe.encode_prompt(prompts)

    def velocity(self, x, t, embeddings):
        return self.pipe.velocity(x, t, embeddings, self.control)


@pytest.mark.parametrize("order", ["sequential", "batched"])
def test_flowedit_with_control_matches_reference(pipe, maps, source_latents, order):
    """Both velocities (and the sampling tail) see the same control."""
    settings = FlowEditSettings(num_inference_steps=4, n_max=3, n_min=1, velocity_order=order)
    args = ("two men jogging in a park", "two astronauts jogging on the moon", "blurry")
    control = pipe.prepare_control(maps, 0.8, FRAMES, SIZE, SIZE)
    ref = reference_flowedit(
        _Controlled(pipe, control), source_latents, *args, settings, torch.Generator().manual_seed(7)
    )
    out = pipe(
        source_latents,
        *args,
        settings=settings,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
        control=maps,
        controlnet_conditioning_scale=0.8,
    )
    assert (out.latents - ref).abs().max().item() <= 1e-5
    free = pipe(
        source_latents,
        *args,
        settings=settings,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    )
    assert (out.latents - free.latents).abs().max().item() > 1e-3  # the control changes the edit


def test_same_prompt_with_control_returns_the_source(pipe, maps, source_latents):
    prompt = "two men jogging in a park"
    out = pipe(
        source_latents,
        prompt,
        prompt,
        settings=FlowEditSettings(
            num_inference_steps=3, n_max=3, guidance_scale=5.0, source_guidance_scale=5.0
        ),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        control=maps,
    )
    assert torch.equal(out.latents, source_latents)


def test_layout_processors_leave_the_control_branch_alone(pipe, maps, source_latents):
    masks = torch.zeros(FRAMES, 2, SIZE, SIZE, dtype=torch.bool)
    masks[:, 0, :, : SIZE // 2], masks[:, 1, :, SIZE // 2 :] = True, True
    seen = []

    def spy(p, i, t, kwargs):
        seen.append({name: type(proc).__name__ for name, proc in p.transformer.attn_processors.items()})

    pipe(
        source_latents,
        "two men jogging in a park",
        "an astronaut and a robot jogging in a park",
        settings=FlowEditSettings(num_inference_steps=2, n_max=1),
        local_prompts=["an astronaut", "a robot"],
        masks=masks,
        layout=DiTLayoutSettings(),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        control=maps,
        callback_on_step_end=spy,
    )
    installed = seen[0]
    assert {n for n, kind in installed.items() if kind.startswith("WanLayout")} == {
        f"blocks.{i}.attn{j}.processor" for i in range(2) for j in (1, 2)
    }
    assert {installed[f"vace_blocks.{i}.attn{j}.processor"] for i in range(2) for j in (1, 2)} == {
        WanAttnProcessor.__name__
    }
    assert all(type(p) is WanAttnProcessor for p in pipe.transformer.attn_processors.values())  # restored


@torch.no_grad()
def test_bad_control_inputs(vace, pipe, maps, tiny_wan, source_latents):
    with pytest.raises(
        ConfigError, match=r"condition maps are \(4, 3, 64, 64\) .* but the clip is \(5, 3, 64, 64\)"
    ):
        pipe.prepare_control(maps[:4], 1.0, FRAMES, SIZE, SIZE)
    with pytest.raises(ConfigError, match=r"condition maps are \(5, 3, 64, 32\)"):
        pipe.prepare_control(maps[:, :, :32], 1.0, FRAMES, SIZE, SIZE)
    t2v = FlowEditPipeline.from_components(tiny_wan)
    with pytest.raises(
        ConfigError, match=r"WanTransformer3DModel has no control branch: .*model=wan21_vace_1_3b"
    ):
        t2v.prepare_control(maps, 1.0, FRAMES, SIZE, SIZE)
    assert t2v.prepare_control(None, 1.0, FRAMES, SIZE, SIZE) is None
    emb = pipe.encode_prompt(["a park"])
    with pytest.raises(ValueError, match="The VACE transformer needs its control latents"):
        pipe.velocity(source_latents, 500.0, emb)
    with pytest.raises(ValueError, match="has no control branch: control must be None"):
        t2v.velocity(source_latents, 500.0, emb, pipe.prepare_control(maps, 1.0, FRAMES, SIZE, SIZE))
    odd = build_tiny_wan(
        seed=0, tokenizer_cache_dir=os.environ["VIDEOEDIT_CACHE_ROOT"] + "/tokenizer", vace=True
    )
    odd.transformer.register_to_config(vace_in_channels=48)
    with pytest.raises(
        ModelLoadError, match=r"takes 48 control channels but its VAE gives 2 x 16 latent \+ 64"
    ):
        odd.pipeline().prepare_control(maps, 1.0, FRAMES, SIZE, SIZE)
