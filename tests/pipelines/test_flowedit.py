"""FlowEdit against a straightforward reference of the algorithm, on the tiny Wan model."""

import pytest
import torch

from videoedit.errors import ConfigError
from videoedit.pipelines.pipeline_flowedit import FlowEditPipeline, FlowEditSettings


@pytest.fixture(scope="module")
def pipe(tiny_wan):
    p = FlowEditPipeline.from_components(tiny_wan)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def source_latents(pipe):
    frames = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return pipe.encode_video(frames)


def reference_flowedit(pipe, x_src, src_prompt, tar_prompt, neg, s: FlowEditSettings, generator):
    """FlowEdit as written in the paper/official code, with the pipeline's own velocity function."""
    cs, ct, cn = (pipe.encode_prompt([p]) for p in (src_prompt, tar_prompt, neg))

    def guided(x, t, cond, g):
        vu, vc = pipe.velocity(x, t, cn), pipe.velocity(x, t, cond)
        return vu + g * (vc - vu)

    pipe.scheduler.set_timesteps(s.num_inference_steps)
    ts = pipe.scheduler.timesteps.tolist()
    T = s.num_inference_steps
    z, xt = x_src.clone(), None
    for i, t in enumerate(ts):
        if T - i > s.n_max:
            continue
        t_i = t / 1000
        t_im1 = ts[i + 1] / 1000 if i + 1 < len(ts) else 0.0
        if T - i > s.n_min:
            dv = torch.zeros_like(x_src)
            for _ in range(s.n_avg):
                n = torch.randn(x_src.shape, generator=generator)
                zs = (1 - t_i) * x_src + t_i * n
                zt = z + zs - x_src
                dv += (
                    guided(zt, t, ct, s.guidance_scale) - guided(zs, t, cs, s.source_guidance_scale)
                ) / s.n_avg
            z = z + (t_im1 - t_i) * dv
        else:
            if i == T - s.n_min:
                n = torch.randn(x_src.shape, generator=generator)
                xt = z + ((1 - t_i) * x_src + t_i * n) - x_src
            xt = xt + (t_im1 - t_i) * guided(xt, t, ct, s.guidance_scale)
    return z if s.n_min == 0 else xt


@pytest.mark.parametrize(
    "settings",
    [
        FlowEditSettings(
            num_inference_steps=5, n_max=4, n_min=0, n_avg=2, guidance_scale=6.0, source_guidance_scale=2.0
        ),
        FlowEditSettings(num_inference_steps=5, n_max=4, n_min=2, n_avg=1),
        FlowEditSettings(num_inference_steps=4, n_max=4, n_min=0, n_avg=1, velocity_order="batched"),
    ],
    ids=["n_avg2", "tail", "batched"],
)
def test_matches_reference(pipe, source_latents, settings):
    args = ("two men jogging in a park", "two astronauts jogging on the moon", "blurry")
    ref = reference_flowedit(pipe, source_latents, *args, settings, torch.Generator().manual_seed(7))
    out = pipe(
        source_latents,
        *args,
        settings=settings,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    )
    assert (out.latents - ref).abs().max().item() <= 1e-5
    assert out.steps_run == settings.n_max
    assert not torch.equal(out.latents, source_latents)


def test_same_prompt_returns_the_source(pipe, source_latents):
    s = FlowEditSettings(num_inference_steps=4, n_max=4, guidance_scale=5.0, source_guidance_scale=5.0)
    prompt = "two men jogging in a park"
    out = pipe(
        source_latents,
        prompt,
        prompt,
        settings=s,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )
    assert torch.equal(out.latents, source_latents)  # the two velocities coincide: the ODE does not move


def test_deterministic_for_a_seed(pipe, source_latents):
    s = FlowEditSettings(num_inference_steps=3, n_max=3)
    args = ("a park", "the moon")
    a = pipe(
        source_latents, *args, settings=s, generator=torch.Generator().manual_seed(1), output_type="latent"
    )
    b = pipe(
        source_latents, *args, settings=s, generator=torch.Generator().manual_seed(1), output_type="latent"
    )
    c = pipe(
        source_latents, *args, settings=s, generator=torch.Generator().manual_seed(2), output_type="latent"
    )
    assert torch.equal(a.latents, b.latents) and not torch.equal(a.latents, c.latents)


def test_decoded_frames_are_the_source_size(pipe, source_latents):
    out = pipe(
        source_latents,
        "a park",
        "the moon",
        settings=FlowEditSettings(num_inference_steps=2, n_max=1),
        generator=torch.Generator().manual_seed(0),
    )
    assert out.frames.shape == (5, 3, 64, 64) and out.frames.abs().max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_inference_steps=10, n_max=12), r"0 <= n_min <= n_max <= num_inference_steps.*n_max=12"),
        (dict(n_min=5, n_max=3), r"n_min=5, n_max=3"),
        (dict(n_avg=0), r"method.n_avg must be >= 1"),
        (dict(shift=0.0), r"method.shift must be > 0"),
        (dict(velocity_order="joint"), r"method.velocity_order must be one of"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FlowEditSettings(**kwargs)
