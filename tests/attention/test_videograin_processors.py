import pytest
import torch

from videoedit.attention.install import attention_layer_names, module_hooks
from videoedit.attention.st_layout import full_frame_attention
from videoedit.attention.state import StepState
from videoedit.attention.videograin import (
    PNP_ATTN_LAYERS,
    ModulationSettings,
    PnPFeatures,
    VideoGrainController,
    VideoGrainCrossAttnProcessor,
    VideoGrainSelfAttnProcessor,
    pnp_conv_hooks,
)
from videoedit.errors import ConfigError
from videoedit.layout.regions import build_layer_layouts

FRAMES, GRID = 2, 4


def _setup(tiny_components, phase="sample", step=0, self_branch="uncond"):
    unet = tiny_components.unet
    name = next(n for n in attention_layer_names(unet, "attn1") if n.startswith("down_blocks.1"))  # factor 2
    attn = dict(unet.named_modules())[name]
    masks = torch.zeros(FRAMES, 2, 8, 8, dtype=torch.bool)
    masks[:, 0, :, :4] = True
    masks[:, 1, :, 4:] = True
    token_region = torch.full((77,), -1)
    token_region[1] = 0
    layouts = build_layer_layouts(masks, (8, 8), token_region, factors=(1, 2, 4, 8))
    state = StepState(
        phase=phase,
        step_index=step,
        timestep=981,
        num_frames=FRAMES,
        branches=("uncond", "cond"),
        latent_size=(8, 8),
    )
    controller = VideoGrainController(
        state=state,
        layouts=layouts,
        modulation=ModulationSettings(self_branch=self_branch),
        schedule=[981, 661, 341],
    )
    return unet, name, attn, controller


def _hidden(attn, seed=0):
    return torch.randn(
        2 * FRAMES, GRID * GRID, attn.to_q.in_features, generator=torch.Generator().manual_seed(seed)
    )


def _plain_full_frame(attn, x):
    h = attn.heads
    q, k, v = (proj(x) for proj in (attn.to_q, attn.to_k, attn.to_v))
    out = []
    for b in range(2):
        sl = slice(b * FRAMES, (b + 1) * FRAMES)
        split = [t[sl].reshape(FRAMES * GRID * GRID, h, -1).transpose(0, 1) for t in (q, k, v)]
        out.append(
            full_frame_attention(*split, FRAMES, attn.scale).transpose(0, 1).reshape(FRAMES, GRID * GRID, -1)
        )
    return attn.to_out[0](torch.cat(out))


def test_only_the_configured_branch_is_modulated(tiny_components):
    _, name, attn, controller = _setup(tiny_components)
    x = _hidden(attn)
    plain = _plain_full_frame(attn, x)
    out = VideoGrainSelfAttnProcessor(controller, name)(attn, x)
    torch.testing.assert_close(controller.treg(), ((981 - 1) / 1000) ** 5)  # official (t - 1)
    uncond, cond = slice(0, FRAMES), slice(FRAMES, 2 * FRAMES)
    torch.testing.assert_close(out[cond], plain[cond], rtol=1e-5, atol=1e-5)  # official: cond untouched
    assert (out[uncond] - plain[uncond]).abs().max() > 1e-3
    _, _, _, both = _setup(tiny_components, self_branch="both")
    out_both = VideoGrainSelfAttnProcessor(both, name)(attn, x)
    assert (out_both[cond] - plain[cond]).abs().max() > 1e-3


def test_modulation_stops_after_the_active_steps(tiny_components):
    _, name, attn, controller = _setup(tiny_components, step=1)  # ceil(0.3 * 3) = 1 active step
    assert controller.treg() == 0
    x = _hidden(attn)
    torch.testing.assert_close(
        VideoGrainSelfAttnProcessor(controller, name)(attn, x),
        _plain_full_frame(attn, x),
        rtol=1e-5,
        atol=1e-5,
    )
    assert ModulationSettings().active_steps(50) == 15


def test_modulation_window_fraction_and_the_official_absolute_end_step():
    fraction, absolute = ModulationSettings(), ModulationSettings(end_step=15)
    # equal at the official 50 steps; the fraction follows the number of steps, end_step does not
    assert [fraction.active_steps(n) for n in (50, 25, 10, 3)] == [15, 8, 3, 1]
    assert [absolute.active_steps(n) for n in (50, 25, 10, 3)] == [15, 15, 10, 3]
    assert ModulationSettings(fraction=0.0).active_steps(50) == 0
    assert ModulationSettings(end_step=0).active_steps(50) == 0
    for bad in (-1, True):
        with pytest.raises(
            ConfigError, match=r"modulation.end_step must be a number of steps >= 0 \(official: 15\)"
        ):
            ModulationSettings(end_step=bad)


def test_end_step_modulates_every_step_of_a_short_schedule(tiny_components):
    _, _, _, controller = _setup(tiny_components, step=2)  # schedule of 3 steps: fraction -> only step 0
    assert controller.treg() == 0
    controller.modulation = ModulationSettings(end_step=15)
    assert controller.treg() == pytest.approx(((341 - 1) / 1000) ** 5)
    controller.state.update(phase="invert")
    assert controller.treg() == 0  # never while inverting


def test_cross_attention_is_modulated_on_the_cond_branch_only(tiny_components):
    unet, name, _, controller = _setup(tiny_components)
    cross_name = name.replace("attn1", "attn2")
    cross = dict(unet.named_modules())[cross_name]
    x = _hidden(cross)
    text = torch.randn(2 * FRAMES, 77, 32, generator=torch.Generator().manual_seed(3))
    out = VideoGrainCrossAttnProcessor(controller, cross_name)(cross, x, text)
    from diffusers.models.attention_processor import AttnProcessor2_0

    ref = AttnProcessor2_0()(cross, x, text)
    torch.testing.assert_close(out[:FRAMES], ref[:FRAMES], rtol=1e-5, atol=1e-5)
    assert (out[FRAMES:] - ref[FRAMES:]).abs().max() > 1e-3


def test_pnp_records_the_source_branch_and_injects_it_at_the_scheduled_steps(tiny_components):
    unet = tiny_components.unet
    name = PNP_ATTN_LAYERS[0]
    attn = dict(unet.named_modules())[name]
    pnp = PnPFeatures(record_timesteps=[661])
    state = StepState(
        phase="invert", timestep=661, num_frames=FRAMES, branches=("cond",), latent_size=(32, 32)
    )
    controller = VideoGrainController(state=state, pnp=pnp, pnp_steps=1, schedule=[981, 661, 341])
    proc = VideoGrainSelfAttnProcessor(controller, name)
    tokens = 8 * 8  # up_blocks.1 is at factor 4 of 32x32 latents
    src = torch.randn(FRAMES, tokens, attn.to_q.in_features, generator=torch.Generator().manual_seed(0))
    proc(attn, src)
    assert set(pnp.features) == {PnPFeatures.key(name, "q", 661), PnPFeatures.key(name, "k", 661)}
    q_src = pnp.get(name, "q", 661)

    seen = {}

    class Spy(VideoGrainSelfAttnProcessor):
        def attend(self, attn, query, key, value, call):
            seen["q"], seen["k"] = query, key
            return super().attend(attn, query, key, value, call)

    state.update(phase="sample", step_index=0, timestep=981, branches=("uncond", "cond"))
    edit = torch.randn(2 * FRAMES, tokens, attn.to_q.in_features, generator=torch.Generator().manual_seed(1))
    Spy(controller, name)(attn, edit)
    # official alignment: step 0 (t=981) takes the features recorded at t=661 (one grid step lower)
    torch.testing.assert_close(seen["q"], q_src.repeat(2, 1, 1, 1))
    state.update(step_index=1, timestep=661)  # outside inject_step
    Spy(controller, name)(attn, edit)
    assert not torch.allclose(seen["q"][:FRAMES], q_src)


def test_pnp_conv_hooks_record_and_inject(tiny_components):
    unet = tiny_components.unet
    pnp = PnPFeatures(record_timesteps=[501])
    state = StepState(phase="invert", timestep=501, num_frames=1, branches=("cond",), latent_size=(8, 8))
    controller = VideoGrainController(
        state=state, pnp=pnp, pnp_steps=1, schedule=[501, 1], pnp_alignment="same"
    )
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    outputs = {}
    spy = {"up_blocks.1.resnets.1.conv2": lambda m, a, o: outputs.__setitem__(len(outputs), o)}
    with module_hooks(unet, forward_hooks=pnp_conv_hooks(controller)):
        unet(x, 501, text)
        recorded = pnp.get("up_blocks.1.resnets.1", "h", 501)
        assert recorded is not None and recorded.shape[0] == 1
        state.update(phase="sample", step_index=0, timestep=501, branches=("uncond", "cond"))
        with module_hooks(unet, forward_hooks=spy):
            unet(torch.randn(2, 4, 8, 8), 501, text.repeat(2, 1, 1))
    torch.testing.assert_close(
        outputs[0], recorded.repeat(2, 1, 1, 1)
    )  # the later spy hook sees the injected value
    assert not any(m._forward_hooks for m in unet.modules())


def test_factor_one_layers_are_never_modulated(tiny_components):
    unet, _, _, controller = _setup(tiny_components)
    name = next(n for n in attention_layer_names(unet, "attn1") if n.startswith("down_blocks.0"))  # factor 1
    attn = dict(unet.named_modules())[name]
    x = torch.randn(2 * FRAMES, 64, attn.to_q.in_features, generator=torch.Generator().manual_seed(5))
    assert controller.treg() > 0 and controller.modulation_for(1, "self") is None
    out = VideoGrainSelfAttnProcessor(controller, name)(attn, x)
    h = attn.heads
    q, k, v = (proj(x) for proj in (attn.to_q, attn.to_k, attn.to_v))
    ref = []
    for b in range(2):
        sl = slice(b * FRAMES, (b + 1) * FRAMES)
        split = [t[sl].reshape(FRAMES * 64, h, -1).transpose(0, 1) for t in (q, k, v)]
        ref.append(full_frame_attention(*split, FRAMES, attn.scale).transpose(0, 1).reshape(FRAMES, 64, -1))
    torch.testing.assert_close(out, attn.to_out[0](torch.cat(ref)), rtol=1e-5, atol=1e-5)


def test_skipped_steps_follow_the_official_loop_index_or_the_true_step(tiny_components):
    schedule = [981 - 20 * i for i in range(50)]
    state = StepState(phase="sample", step_index=2, timestep=schedule[12])  # 12 steps skipped (0.25 of 50)
    official = VideoGrainController(
        state=state, layouts={}, modulation=ModulationSettings(), schedule=schedule, step_offset=12
    )
    consistent = VideoGrainController(
        state=state,
        layouts={},
        modulation=ModulationSettings(),
        schedule=schedule,
        step_offset=12,
        skip_mode="consistent",
    )
    torch.testing.assert_close(official.treg(), ((schedule[2] - 1) / 1000) ** 5)  # the loop index, not t
    torch.testing.assert_close(consistent.treg(), ((schedule[12] - 1) / 1000) ** 5)
    state.update(step_index=4)  # consistent: position 16 >= 15 active steps
    assert official.treg() > 0 and consistent.treg() == 0


def test_pnp_record_and_inject_timesteps_agree():
    from videoedit.attention.videograin import pnp_source_timestep, schedule_position
    from videoedit.methods.videograin import VideoGrainMethod
    from videoedit.models.components import sd_ddim_scheduler

    scheduler = sd_ddim_scheduler()
    schedule = [981 - 20 * i for i in range(50)]
    for skip_mode in ("official", "consistent"):
        for alignment in ("official", "same"):
            method = VideoGrainMethod(
                use_pnp=True,
                inject_step=5,
                pnp_alignment=alignment,
                blending_percentage=0.25,
                skip_mode=skip_mode,
            )
            injected = [
                pnp_source_timestep(schedule, schedule_position(i, 12, skip_mode), alignment)
                for i in range(5)
            ]
            assert method.pnp_record_timesteps(scheduler) == injected
    official = VideoGrainMethod(use_pnp=True, inject_step=5)
    assert official.pnp_record_timesteps(scheduler) == [961, 941, 921, 901, 881]  # t - 20 feeds step t


def test_pnp_injects_each_branch_its_own_recorded_features(tiny_components):
    unet = tiny_components.unet
    name = PNP_ATTN_LAYERS[0]
    attn = dict(unet.named_modules())[name]
    pnp = PnPFeatures(record_timesteps=[661])
    state = StepState(
        phase="invert", timestep=661, num_frames=FRAMES, branches=("uncond", "cond"), latent_size=(32, 32)
    )
    controller = VideoGrainController(state=state, pnp=pnp, pnp_steps=1, schedule=[981, 661, 341])
    proc = VideoGrainSelfAttnProcessor(controller, name)
    src = torch.randn(2 * FRAMES, 64, attn.to_q.in_features, generator=torch.Generator().manual_seed(0))
    proc(attn, src)
    q_uncond, q_cond = pnp.get(name, "q", 661, "uncond"), pnp.get(name, "q", 661, "cond")
    assert not torch.allclose(q_uncond, q_cond)
    seen = {}

    class Spy(VideoGrainSelfAttnProcessor):
        def attend(self, attn, query, key, value, call):
            seen["q"] = query
            return super().attend(attn, query, key, value, call)

    state.update(phase="sample", step_index=0, timestep=981)
    Spy(controller, name)(attn, torch.randn_like(src))
    torch.testing.assert_close(seen["q"], torch.cat([q_uncond, q_cond]))
