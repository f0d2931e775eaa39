"""Layout attention on Wan's DiT: against full-matrix references, and WanAttnProcessor when off."""

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from videoedit.attention.install import attention_processors
from videoedit.attention.st_layout import reference_full_frame_attention
from videoedit.attention.state import StepState
from videoedit.attention.wan_layout import (
    DiTLayoutSettings,
    WanLayoutController,
    modulated_cross_attention,
    reference_cross_attention,
    wan_layout_processors,
    wan_projections,
)
from videoedit.errors import ConfigError
from videoedit.layout.regions import layout_from_token_masks


def _layout(frames=3, h=4, w=4, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(frames, 2, h, w, generator=g) > 0.5  # overlapping regions on purpose
    token_region = torch.full((length,), -1, dtype=torch.long)
    token_region[2:4], token_region[5:6] = 0, 1
    return layout_from_token_masks(masks, token_region)


def test_modulated_cross_attention_matches_reference():
    layout = _layout()
    g = torch.Generator().manual_seed(1)
    heads, n, length, d = 2, 48, 16, 8
    q, k, v = (torch.randn(heads, m, d, generator=g) for m in (n, length, length))
    prompt_length = 7
    positive = layout.cross_mask.reshape(n, length)[:, :prompt_length]
    strength = layout.cross_size.reshape(n) * 0.8
    out = modulated_cross_attention(q, k, v, positive, strength, prompt_length, chunk_budget_bytes=2000)
    ref = reference_cross_attention(q, k, v, positive, strength, prompt_length)
    assert (out - ref).abs().max() <= 1e-4
    # padding columns keep their logits: with no modulated columns it is plain attention
    plain = modulated_cross_attention(q, k, v, positive[:, :0], strength, 0, chunk_budget_bytes=2000)
    torch.testing.assert_close(
        plain, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=0
    )


def _controller(tiny_wan, state, layout, settings=None, steps=10):
    return WanLayoutController(
        state, layout, settings or DiTLayoutSettings(), prompt_length=7, executed_steps=steps
    )


def _block_inputs(tiny_wan, frames=3, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim = tiny_wan.transformer.config.num_attention_heads * tiny_wan.transformer.config.attention_head_dim
    hidden = torch.randn(1, frames * h * w, dim, generator=g)
    text = torch.randn(1, 16, dim, generator=g)
    rope = tiny_wan.transformer.rope(torch.zeros(1, 16, frames, 2 * h, 2 * w))
    return hidden, text, rope


def test_processors_equal_wan_when_the_modulation_is_off(tiny_wan):
    attn1 = tiny_wan.transformer.blocks[0].attn1
    attn2 = tiny_wan.transformer.blocks[0].attn2
    hidden, text, rope = _block_inputs(tiny_wan)
    state = StepState(phase="sample", step_index=0, timestep=900.0, branches=("source_cond",))
    procs = wan_layout_processors(tiny_wan.transformer, _controller(tiny_wan, state, _layout()))
    self_proc, cross_proc = procs["blocks.0.attn1"], procs["blocks.0.attn2"]
    base = WanAttnProcessor()
    for branch in ("source_cond", "target_uncond"):  # source velocity; a branch the settings leave alone
        state.update(branches=(branch,))
        assert torch.equal(self_proc(attn1, hidden, None, None, rope), base(attn1, hidden, None, None, rope))
        assert torch.equal(cross_proc(attn2, hidden, text), base(attn2, hidden, text))
    state.update(branches=("target_cond",), step_index=3)  # past the window (ceil(0.3 * 10) = 3 steps)
    assert torch.equal(self_proc(attn1, hidden, None, None, rope), base(attn1, hidden, None, None, rope))


def test_own_projections_reproduce_wan(tiny_wan):
    """The modulated path's prologue (norms, rotary) is Wan's: with zero weights it gives Wan's output."""
    attn1 = tiny_wan.transformer.blocks[1].attn1
    hidden, _, rope = _block_inputs(tiny_wan, seed=2)
    layout = _layout()
    settings = DiTLayoutSettings(sreg=1e-30, creg=0.0)  # on, but vanishing
    state = StepState(phase="sample", step_index=0, timestep=900.0, branches=("target_cond",))
    proc = wan_layout_processors(tiny_wan.transformer, _controller(tiny_wan, state, layout, settings))[
        "blocks.1.attn1"
    ]
    torch.testing.assert_close(
        proc(attn1, hidden, None, None, rope),
        WanAttnProcessor()(attn1, hidden, None, None, rope),
        atol=1e-5,
        rtol=0,
    )


def test_self_attention_matches_the_full_matrix_reference(tiny_wan):
    attn1 = tiny_wan.transformer.blocks[0].attn1
    frames, h, w = 3, 4, 4
    hidden, _, rope = _block_inputs(tiny_wan, frames, h, w, seed=4)
    layout = _layout(frames, h, w, seed=5)
    settings = DiTLayoutSettings(chunk_budget_mb=0.001)  # many small query chunks
    t = 900.0
    state = StepState(phase="sample", step_index=0, timestep=t, branches=("target_cond",))
    proc = wan_layout_processors(tiny_wan.transformer, _controller(tiny_wan, state, layout, settings))[
        "blocks.0.attn1"
    ]
    out = proc(attn1, hidden, None, None, rope)
    # reference: the same projections, full pair mask and size factors, float64
    q, k, v = wan_projections(attn1, hidden, None, rope)
    member = layout.flat_member()
    pairs = (member @ member.T) > 0
    size = 1 - (member @ member.T).sum(1) / (frames**2 * h * w)  # reg_sizes: overlaps counted per region
    weight = settings.sreg * settings.treg(t)
    ref = reference_full_frame_attention(
        q[0].transpose(0, 1),
        k[0].transpose(0, 1),
        v[0].transpose(0, 1),
        frames,
        q.shape[-1] ** -0.5,
        pairs,
        size,
        weight,
    ).transpose(0, 1)
    ref = attn1.to_out[1](attn1.to_out[0](ref.flatten(1, 2)[None].float()))
    assert (out - ref).abs().max() <= 1e-4
    assert (out - WanAttnProcessor()(attn1, hidden, None, None, rope)).abs().max() > 1e-3  # it does act


def test_cross_attention_processor_matches_reference(tiny_wan):
    attn2 = tiny_wan.transformer.blocks[0].attn2
    hidden, text, _ = _block_inputs(tiny_wan, seed=6)
    layout = _layout(seed=7)
    t = 950.0
    state = StepState(phase="sample", step_index=1, timestep=t, branches=("target_cond",))
    controller = _controller(tiny_wan, state, layout)
    out = wan_layout_processors(tiny_wan.transformer, controller)["blocks.0.attn2"](attn2, hidden, text)
    q, k, v = wan_projections(attn2, hidden, text)
    weight = controller.settings.creg * controller.settings.treg(t)
    ref = reference_cross_attention(
        q[0].transpose(0, 1),
        k[0].transpose(0, 1),
        v[0].transpose(0, 1),
        controller.cross_mask,
        controller.cross_size * weight,
        7,
    ).transpose(0, 1)
    ref = attn2.to_out[1](attn2.to_out[0](ref.flatten(1, 2)[None].float()))
    assert (out - ref).abs().max() <= 1e-4


def test_installed_on_every_block_and_restored(tiny_wan):
    state = StepState()
    procs = wan_layout_processors(tiny_wan.transformer, _controller(tiny_wan, state, _layout()))
    assert len(procs) == 2 * len(tiny_wan.transformer.blocks)
    before = dict(tiny_wan.transformer.attn_processors)
    with attention_processors(tiny_wan.transformer, procs):
        assert all(isinstance(p, WanAttnProcessor) for p in tiny_wan.transformer.attn_processors.values())
        assert (
            type(tiny_wan.transformer.attn_processors["blocks.0.attn1.processor"]).__name__
            == "WanLayoutSelfAttnProcessor"
        )
    assert dict(tiny_wan.transformer.attn_processors) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(self_branch="source"), "method.layout.self_branch must be one of"),
        (dict(fraction=1.5), r"method.layout.fraction must be in \[0, 1\]"),
        (dict(temporal="median"), "method.layout.temporal must be mean or any"),
        (dict(threshold=0), r"method.layout.threshold must be in \(0, 1\]"),
    ],
)
def test_bad_layout_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DiTLayoutSettings(**kwargs)
    with pytest.raises(ConfigError, match=r"Bad method\.layout settings"):
        DiTLayoutSettings.build({"sreg_typo": 1})
