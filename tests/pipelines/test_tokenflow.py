"""TokenFlowPipeline / TokenFlowMethod with the tiny model: PnP schedules, hooks, starts, checks."""

import logging

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

import videoedit.pipelines.pipeline_tokenflow as pipeline_tokenflow
from videoedit.attention.tokenflow import (
    PNP_ATTENTION_LAYERS,
    PnPConvInjection,
    TokenFlowAttnProcessor,
    official_blend_plan,
)
from videoedit.data.synthetic import TwoFiguresClip
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import sampling_timesteps
from videoedit.methods.tokenflow import TOKENFLOW_INVERSION, TokenFlowMethod
from videoedit.models.components import sd_ddim_scheduler
from videoedit.pipelines.pipeline_tokenflow import (
    OFFICIAL_NEGATIVE_PROMPT,
    TokenFlowPipeline,
    TokenFlowSettings,
)

STEPS, INVERSION_STEPS, FRAMES = 5, 10, 4  # sampling 801 ... 1 on the inversion grid 1, 101, ..., 901


@pytest.fixture(scope="module")
def pipe(tiny_components):
    p = TokenFlowPipeline.from_components(tiny_components)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def inversion(pipe):
    frames = torch.rand(FRAMES, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return pipe.invert(
        frames,
        prompt="a woman running",
        num_inference_steps=STEPS,
        num_inversion_steps=INVERSION_STEPS,
        noise_timestep="next",
    )


def _edit(pipe, inversion, **kwargs):
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in TokenFlowSettings.__dataclass_fields__}
    args = dict(
        prompt="a marble sculpture",
        inversion=inversion,
        source_prompt="a woman running",
        num_inference_steps=STEPS,
        settings=TokenFlowSettings(**{"batch_size": 2, **options}),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )
    return pipe(**{**args, **kwargs})


def test_pnp_injection_follows_the_schedule_and_leaves_nothing_behind(pipe, inversion, monkeypatch):
    unet = pipe.unet
    attn_seen, conv_seen = [], []
    original_attend, original_hook = TokenFlowAttnProcessor.attend, PnPConvInjection.__call__

    def attend(self, attn, q, k, v, call):
        if self.store.mode == "keyframes":
            st = self.store.state
            src, edited = q[st.branch_slice("source")], [st.branch_slice("uncond"), st.branch_slice("cond")]
            same_q = all(torch.equal(q[s], src) for s in edited)
            same_k = all(torch.equal(k[s], k[st.branch_slice("source")]) for s in edited)
            attn_seen.append((self.name, st.step_index, same_q, same_k))
        return original_attend(self, attn, q, k, v, call)

    def hook(self, module, args, output):
        new = original_hook(self, module, args, output)
        out, st = (output if new is None else new), self.store.state
        src = out[st.branch_slice("source")]
        same = all(torch.equal(out[st.branch_slice(b)], src) for b in ("uncond", "cond"))
        conv_seen.append((module, st.step_index, self.store.mode, same))
        return new

    monkeypatch.setattr(TokenFlowAttnProcessor, "attend", attend)
    monkeypatch.setattr(PnPConvInjection, "__call__", hook)
    _edit(pipe, inversion)

    qk_steps = int(STEPS * 0.5)  # 2
    conv_steps = int(STEPS * 0.8)  # 4
    assert {s for _, s, _, _ in attn_seen} == set(range(STEPS))
    for name, step, same_q, same_k in attn_seen:
        injected = name in PNP_ATTENTION_LAYERS and step < qk_steps
        assert same_q == injected and same_k == injected, (name, step)
    assert len({n for n, *_ in attn_seen}) == 16
    assert all(m is unet.up_blocks[1].resnets[1].conv2 for m, *_ in conv_seen)
    assert {mode for _, _, mode, _ in conv_seen} == {"keyframes", "propagate"}
    for _, step, _, same in conv_seen:
        assert same == (step < conv_steps), step
    # processors and hooks are gone
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    assert not any(m._forward_hooks for m in unet.modules())


def test_sdedit_variant_injects_nothing(pipe, inversion, monkeypatch):
    seen, attn_seen, conv_calls = [], [], []
    original, original_attend = TokenFlowAttnProcessor.adjust_qkv, TokenFlowAttnProcessor.attend

    def adjust(self, attn, q, k, v, call):
        seen.append(self.store.qk_timesteps)
        return original(self, attn, q, k, v, call)

    def attend(self, attn, q, k, v, call):  # what the keyframe pass attends with, after injection
        if self.store.mode == "keyframes":
            st = self.store.state
            src = st.branch_slice("source")
            for b in ("uncond", "cond"):
                sl = st.branch_slice(b)
                attn_seen.append(
                    (self.name, st.step_index, torch.equal(q[sl], q[src]), torch.equal(k[sl], k[src]))
                )
        return original_attend(self, attn, q, k, v, call)

    monkeypatch.setattr(TokenFlowAttnProcessor, "adjust_qkv", adjust)
    monkeypatch.setattr(TokenFlowAttnProcessor, "attend", attend)
    monkeypatch.setattr(PnPConvInjection, "__call__", lambda self, *a: conv_calls.append(a))
    official = _edit(pipe, inversion, variant="sdedit", sdedit_start=0.9)
    assert official.timesteps == [401, 201, 1]  # timesteps[int(1 - 4.5):]
    assert seen and not any(seen)
    # behaviour: at every step, in every layer (the PnP ones included), the edited branches keep their
    # own queries and keys, and the conv injection hook never runs
    assert {step for _, step, _, _ in attn_seen} == set(range(3))
    assert {name for name, *_ in attn_seen} >= set(PNP_ATTENTION_LAYERS)
    assert not any(same_q or same_k for _, _, same_q, same_k in attn_seen)
    assert conv_calls == []
    exact = _edit(pipe, inversion, variant="sdedit", sdedit_start=0.9, sdedit_start_rounding="exact")
    assert exact.timesteps == [601, 401, 201, 1]  # floor(0.9 * 5) = 4 steps
    assert not any(m._forward_hooks for m in pipe.unet.modules())


def test_initial_latents(pipe, inversion):
    t0 = sampling_timesteps(pipe.scheduler, STEPS)[0]
    z0, t_max = inversion.source_latents, max(inversion.latents)
    a = pipe.scheduler.alphas_cumprod
    eps = (inversion.at(t_max) - a[t_max].sqrt() * z0) / (1 - a[t_max]).sqrt()
    expected = a[t0].sqrt() * z0 + (1 - a[t0]).sqrt() * eps  # official: add_noise(z0, eps_999, 981)
    torch.testing.assert_close(pipe.initial_latents(inversion, t0, "official"), expected)
    assert not torch.allclose(expected, inversion.at(t0), atol=1e-3)  # a re-noised estimate
    torch.testing.assert_close(pipe.initial_latents(inversion, t0, "inverted"), inversion.at(t0))
    noise = torch.randn(1, *z0.shape[1:])
    random_start = pipe.initial_latents(inversion, t0, noise=noise)
    torch.testing.assert_close(random_start, a[t0].sqrt() * z0 + (1 - a[t0]).sqrt() * noise)


def test_runs_are_reproducible_and_keyframes_follow_the_generator(pipe, inversion):
    first = _edit(pipe, inversion)
    again = _edit(pipe, inversion)
    other = _edit(pipe, inversion, generator=torch.Generator().manual_seed(5))
    assert first.keyframes == again.keyframes and torch.equal(first.latents, again.latents)
    assert len(first.keyframes) == STEPS and all(k[0] in (0, 1) and k[1] in (2, 3) for k in first.keyframes)
    assert first.keyframes != other.keyframes
    even = _edit(pipe, inversion, keyframe_sampling="even", blend="paper", init_latent="inverted")
    assert even.keyframes == [[1, 3]] * STEPS
    assert first.cache_bytes > 0


def test_all_frames_at_once_and_odd_batches(pipe, inversion, monkeypatch):
    """A batch larger than the clip (one keyframe), and a shorter last batch."""
    single = _edit(pipe, inversion, batch_size=8, num_inference_steps=STEPS)
    assert all(len(k) == 1 for k in single.keyframes)
    plans = []
    original_plan = pipeline_tokenflow.propagation_plan

    def record(b, batches, keyframes, blend):
        plans.append((b, list(batches[b]), original_plan(b, batches, keyframes, blend)))
        return plans[-1][2]

    monkeypatch.setattr(pipeline_tokenflow, "propagation_plan", record)
    odd = _edit(pipe, inversion, batch_size=3, keyframe_window=0, nn_chunk_size=7)
    assert all(len(k) == 2 and k[1] == 3 for k in odd.keyframes)
    assert torch.isfinite(odd.latents).all()
    # batches [0, 1, 2] and [3]: the short batch blends its own keyframe (pivot p1 = its real centre, 3)
    # with the previous one (pivot p2 = 1): w1 = sigmoid(|3 - 1| / (|3 - 3| + |3 - 1|)) = sigmoid(1)
    assert [(b, frames) for b, frames, _ in plans] == [(0, [0, 1, 2]), (1, [3])] * STEPS
    short = plans[1][2]
    assert short == official_blend_plan(range(3, 4), 1, range(0, 3))
    (((own, w1), (previous, w2)),) = short.sources
    assert (own, previous) == (1, 0) and short.exact == (False,)
    assert w1 == pytest.approx(torch.sigmoid(torch.tensor(1.0, dtype=torch.float64)).item())
    assert w2 == pytest.approx(1 - w1)


def test_controlnet_conditions_all_three_branches(pipe, inversion, monkeypatch):
    batches = []
    cn = pipe.controlnet
    handle = cn.register_forward_pre_hook(
        lambda m, args, kwargs: batches.append(kwargs["controlnet_cond"].shape[0]), with_kwargs=True
    )
    try:
        control = (torch.rand(FRAMES, 64, 64, 3) * 255).to(torch.uint8).numpy()
        _edit(pipe, inversion, control=control, num_inference_steps=STEPS)
    finally:
        handle.remove()
    # per step: the keyframe pass (2 keyframes) and two batches of 2, each x 3 branches
    assert batches[:3] == [6, 6, 6] and len(batches) == 3 * STEPS
    with pytest.raises(ConfigError, match="3 control maps for 4 frames"):
        _edit(pipe, inversion, control=control[:3])


def test_bad_options_and_schedules_fail_before_any_work(pipe, inversion, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the UNet ran before the options were checked")

    monkeypatch.setitem(vars(pipe.unet), "forward", no_work)  # removed again afterwards
    with pytest.raises(ConfigError, match=r"method.blend must be one of \['official', 'paper'\]"):
        _edit(pipe, inversion, blend="nope")
    with pytest.raises(ConfigError, match=r"method\.batch_size must be >= 1"):
        _edit(pipe, inversion, batch_size=0)
    with pytest.raises(
        ConfigError, match=r"method.pnp_attn_t is a fraction of the steps and must be in \[0, 1\]"
    ):
        _edit(pipe, inversion, pnp_attn_t=1.5)
    with pytest.raises(ConfigError, match=r"The inversion has no latents at t=\[981, 961, 941\]"):
        _edit(pipe, inversion, num_inference_steps=50)
    with pytest.raises(ConfigError, match="leaves no step to run"):
        _edit(pipe, inversion, variant="sdedit", sdedit_start=0.1, sdedit_start_rounding="exact")
    with pytest.raises(AssertionError, match="the UNet ran"):  # the patch is in place
        _edit(pipe, inversion)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_generator_draws_the_keyframes_and_the_sdedit_noise(pipe, inversion):
    out = _edit(
        pipe,
        inversion,
        variant="sdedit",
        sdedit_noise="random",
        generator=torch.Generator("cuda").manual_seed(0),
    )
    assert torch.isfinite(out.latents).all() and len(out.keyframes) == len(out.timesteps)


def test_method_defaults_are_the_official_ones():
    method = TokenFlowMethod()
    assert method.inversion == TOKENFLOW_INVERSION
    assert (method.inversion.num_inversion_steps, method.inversion.noise_timestep) == (500, "next")
    assert (method.inversion.frame_batch_size, method.inversion.vae_sample) == (40, False)
    assert method.negative_prompt == OFFICIAL_NEGATIVE_PROMPT
    opts = method.options()
    assert (opts["batch_size"], opts["pnp_attn_t"], opts["pnp_f_t"]) == (8, 0.5, 0.8)
    assert (opts["keyframe_sampling"], opts["blend"], opts["init_latent"]) == (
        "random",
        "official",
        "official",
    )
    assert (method.num_inference_steps, method.guidance_scale, method.source_prompt) == (50, 7.5, "inversion")
    # a partial inversion mapping keeps TokenFlow's other defaults
    assert TokenFlowMethod(inversion={"num_inversion_steps": 100}).inversion.noise_timestep == "next"
    method.check_schedule(sd_ddim_scheduler())


def test_method_warns_when_the_official_code_would_drop_frames(caplog):
    clip = TwoFiguresClip(num_frames=5, height=64, width=64).load()
    with caplog.at_level(logging.WARNING, logger="videoedit.methods.tokenflow"):
        TokenFlowMethod(batch_size=4).check_inputs(clip, [])
    assert "the official code drops the last 1 frames" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videoedit.methods.tokenflow"):
        TokenFlowMethod(batch_size=5).check_inputs(clip, [])
    assert "drops" not in caplog.text


def test_method_schedule_and_option_errors():
    with pytest.raises(
        ConfigError, match=r"inversion schedule \(300 steps\) does not contain the sampling timesteps"
    ):
        TokenFlowMethod(inversion={"num_inversion_steps": 300}).check_schedule(sd_ddim_scheduler())
    with pytest.raises(ConfigError, match=r"method\.source_prompt must be 'inversion' or 'empty'"):
        TokenFlowMethod(source_prompt="target")
    with pytest.raises(ConfigError, match=r"method\.variant must be one of"):
        TokenFlowMethod(variant="ddpm")
    with pytest.raises(ConfigError, match=r"Bad method\.inversion settings"):
        TokenFlowMethod(inversion={"steps": 5})


def test_non_finite_latents_stop_the_edit_at_their_step(pipe, inversion, monkeypatch):
    from videoedit.errors import NumericalError

    real_step, calls = pipe.scheduler.step, []

    def overflowing_step(eps, t, latents, **kwargs):  # the second step overflows (as fp16 can)
        calls.append(int(t))
        out = real_step(eps, t, latents, **kwargs)
        if len({*calls}) == 2:
            out[0][0, 0, 0, 0] = float("inf")
        return out

    monkeypatch.setattr(pipe.scheduler, "step", overflowing_step)
    timesteps = sampling_timesteps(pipe.scheduler, STEPS)
    with pytest.raises(
        NumericalError,
        match=rf"latents became non-finite at sampling step 2/{STEPS} \(t={timesteps[1]}\): 0 NaN and 2 infinite",  # one per batch
    ):
        _edit(pipe, inversion)
    assert len({*calls}) == 2  # stopped at that step, not after the last one
