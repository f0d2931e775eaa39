import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from videoedit.attention.dualflow import (
    DualFlowAttnProcessor,
    DualFlowContext,
    MemoryBank,
    dualflow_attention,
    dualflow_bias,
    lockstep_banks,
    mask_to_tokens,
    select_layers,
    warp_tokens,
)
from videoedit.attention.install import attention_layer_names
from videoedit.attention.state import StepState


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _reference(q, groups, biases, scale):
    """Straightforward attention: softmax over the concatenated key groups, each with its (B, N) bias."""
    keys = torch.cat([k for k, _ in groups], dim=2)
    values = torch.cat([v for _, v in groups], dim=2)
    bias = torch.cat(
        [b[:, None, :, None].expand(-1, 1, -1, k.shape[2]) for (k, _), b in zip(groups, biases, strict=True)],
        dim=-1,
    )
    scores = torch.einsum("bhnd,bhmd->bhnm", q, keys) * scale + bias
    return torch.einsum("bhnm,bhmd->bhnd", scores.softmax(-1), values)


def test_bias_signs_and_invalid_groups():
    mask = torch.tensor([[0.0, 0.25, 1.0]])  # 3 query tokens
    bias = dualflow_bias(mask, num_own=2, bias_scale=8.0, prev_valid=torch.tensor([True]), num_prev=2,
                         bank_valid=torch.tensor([[True, False]]), slot_len=2)  # fmt: skip
    assert bias.shape == (1, 1, 3, 2 + 2 + 4)
    assert (bias[0, 0, :, :2] == 0).all()  # own keys: never biased
    torch.testing.assert_close(bias[0, 0, :, 2], -8.0 * mask[0])  # previous frame: -lambda * M
    torch.testing.assert_close(bias[0, 0, :, 4], -8.0 * (1 - mask[0]))  # bank: -lambda * (1 - M)
    assert torch.isneginf(bias[0, 0, :, 6:]).all()  # empty bank slot
    gone = dualflow_bias(mask, 2, 8.0, prev_valid=torch.tensor([False]), num_prev=2)
    assert torch.isneginf(gone[0, 0, :, 2:]).all() and (gone[0, 0, :, :2] == 0).all()


def test_attention_equals_the_reference_formula_chunked_or_not():
    b, h, n, d, slots = 4, 2, 6, 8, 2
    q, k, v = _rand(b, h, n, d, seed=1), _rand(b, h, n, d, seed=2), _rand(b, h, n, d, seed=3)
    kp, vp = _rand(b, h, n, d, seed=4), _rand(b, h, n, d, seed=5)
    kb, vb = _rand(b, h, slots * n, d, seed=6), _rand(b, h, slots * n, d, seed=7)
    mask = torch.rand(b, n, generator=torch.Generator().manual_seed(8))
    lam, scale = 3.0, d**-0.5
    ref = _reference(
        q,
        [(k, v), (kp, vp), (kb, vb)],
        [torch.zeros(b, n), -lam * mask, -lam * (1 - mask)],
        scale,
    )
    for chunk in (None, 1, 3):
        out = dualflow_attention(q, k, v, mask, lam, scale, kp, vp, None, kb, vb,
                                 torch.ones(b, slots, dtype=torch.bool), chunk_size=chunk)  # fmt: skip
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_lambda_zero_without_bank_is_plain_extended_attention():
    b, h, n, d = 3, 2, 5, 4
    q, k, v = _rand(b, h, n, d, seed=1), _rand(b, h, n, d, seed=2), _rand(b, h, n, d, seed=3)
    kp, vp = _rand(b, h, n, d, seed=4), _rand(b, h, n, d, seed=5)
    mask = torch.rand(b, n, generator=torch.Generator().manual_seed(6))
    out = dualflow_attention(q, k, v, mask, 0.0, None, kp, vp)
    extended = torch.nn.functional.scaled_dot_product_attention(
        q, torch.cat([k, kp], 2), torch.cat([v, vp], 2)
    )
    torch.testing.assert_close(out, extended, atol=1e-6, rtol=1e-5)
    # nothing to attend to besides the frame itself: plain attention
    torch.testing.assert_close(
        dualflow_attention(q, k, v, mask, 5.0), torch.nn.functional.scaled_dot_product_attention(q, k, v)
    )


def test_a_high_discrepancy_query_ignores_the_previous_frame_and_reads_the_bank():
    """Values mark their group (channel 0: previous frame, channel 1: bank), so the output's channels are
    the attention weight each group receives."""
    b, h, n, d = 1, 1, 2, 4
    q = _rand(b, h, n, d, seed=1) * 0.1
    k, kp, kb = (_rand(b, h, n, d, seed=s) * 0.1 for s in (2, 3, 4))
    v, vp, vb = torch.zeros(b, h, n, d), torch.zeros(b, h, n, d), torch.zeros(b, h, n, d)
    vp[..., 0], vb[..., 1] = 1.0, 1.0
    mask = torch.tensor([[1.0, 0.0]])  # token 0 discrepant, token 1 consistent
    for lam, tiny in ((1e4, 1e-6), (10.0, 1e-3)):  # hard and soft gating
        out = dualflow_attention(
            q, k, v, mask, lam, None, kp, vp, None, kb, vb, torch.ones(1, 1, dtype=torch.bool)
        )
        prev_w, bank_w = out[0, 0, :, 0], out[0, 0, :, 1]
        assert prev_w[0] < tiny and bank_w[0] > 0.3  # discrepant: previous frame off, bank on
        assert bank_w[1] < tiny and prev_w[1] > 0.3  # consistent: the reverse


def test_warp_tokens_follows_the_row_major_grid():
    grid = (4, 6)  # non-square: a (1, seq_len) resize would scramble this
    maps = torch.arange(24.0).view(1, 1, 4, 6)
    x = maps.flatten(2).transpose(1, 2)[:, None]  # (B, heads, N, d): row-major tokens, d = 1
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0] = 1.0  # out(p) = x(p + (1, 0)): the token to the right
    out = warp_tokens(x, flow, grid)[0, 0, :, 0].view(4, 6)
    torch.testing.assert_close(out[:, :-1], maps[0, 0, :, 1:])
    flow[:, 0], flow[:, 1] = 0.0, -1.0  # the token above
    out = warp_tokens(x, flow, grid)[0, 0, :, 0].view(4, 6)
    torch.testing.assert_close(out[1:], maps[0, 0, :-1])


def test_mask_to_tokens_keeps_the_token_grid():
    mask = torch.zeros(1, 1, 16, 32)
    mask[..., :, :16] = 1.0  # left half of the latent grid
    tokens = mask_to_tokens(mask, (8, 16))
    assert tokens.shape == (1, 128)
    grid = tokens.view(8, 16)
    assert (grid[:, :8] == 1).all() and (grid[:, 8:] == 0).all()


# ------------------------------------------------------------------------------------------- processor


def _attn(dim=16, heads=2):
    torch.manual_seed(0)
    return Attention(query_dim=dim, heads=heads, dim_head=dim // heads).eval()


def _state(frames, branches=("uncond", "cond"), latent=(4, 6)):
    return StepState(phase="sample", num_steps=4, num_frames=frames, branches=branches, latent_size=latent)


def test_one_frame_equals_attnprocessor2_0():
    attn = _attn()
    x = _rand(2, 24, 16, seed=1)  # CFG batch of one frame, 4x6 tokens
    ref = AttnProcessor2_0()(attn, x)
    for mode in ("lockstep", "streaming"):
        ctx = DualFlowContext(_state(1), mode=mode, bias_scale=1e4)
        ctx.set_frames(_rand(1, 2, 4, 6, seed=2), torch.rand(1, 1, 4, 6), bank_index=torch.full((1, 3), -1))
        ctx.record = {} if mode == "streaming" else None
        torch.testing.assert_close(DualFlowAttnProcessor("l.attn1", ctx)(attn, x), ref, atol=1e-6, rtol=1e-5)


def test_inactive_steps_and_cross_attention_are_plain_attention():
    """Two frames with a non-zero mask: active steps attend across frames (differ from AttnProcessor2_0),
    steps outside ``step_range`` and cross-attention calls do not."""
    attn = Attention(query_dim=16, cross_attention_dim=16, heads=2, dim_head=8).eval()
    x = _rand(4, 24, 16, seed=1)  # CFG batch of two frames, 4x6 tokens
    text = _rand(4, 7, 16, seed=2)  # 7 "text" tokens: no token grid
    for mode in ("lockstep", "streaming"):
        ctx = DualFlowContext(_state(2 if mode == "lockstep" else 1), mode=mode, bias_scale=2.0,
                              step_range=(0.0, 0.5))  # fmt: skip
        proc = DualFlowAttnProcessor("l.attn1", ctx)
        masks = torch.full((2, 1, 4, 6), 0.3)
        ctx.state.update(step_index=1)  # active: 1 < 0.5 * 4 steps
        if mode == "lockstep":
            ctx.set_frames(torch.zeros(2, 2, 4, 6), masks, bank_index=torch.tensor([[-1], [0]]))
            batch = x
        else:  # frame 1 with frame 0's K/V (same step) cached as previous frame and bank
            ctx.record = {}
            ctx.set_frames(torch.zeros(1, 2, 4, 6), masks[:1], prev_valid=torch.tensor([False]))
            proc(attn, x[[0, 2]])
            ctx.prev_kv, ctx.bank_kv, ctx.record = ctx.record, [ctx.record], {}
            ctx.set_frames(torch.zeros(1, 2, 4, 6), masks[1:], prev_valid=torch.tensor([True]))
            batch = x[[1, 3]]
        plain = AttnProcessor2_0()(attn, batch)
        assert (proc(attn, batch) - plain).abs().max() > 1e-3, mode
        ctx.state.update(step_index=2)  # inactive
        torch.testing.assert_close(proc(attn, batch), plain)
        ctx.state.update(step_index=1)  # active step, but cross-attention
        torch.testing.assert_close(
            proc(attn, batch, encoder_hidden_states=text[: batch.shape[0]]),
            AttnProcessor2_0()(attn, batch, encoder_hidden_states=text[: batch.shape[0]]),
        )


def _projections(attn, x):
    b = x.shape[0]
    q, k, v = (m(x).view(b, -1, attn.heads, 8).transpose(1, 2) for m in (attn.to_q, attn.to_k, attn.to_v))
    return q, k, v


def _finish(attn, out):
    b, heads, n, d = out.shape
    return attn.to_out[0](out.transpose(1, 2).reshape(b, n, heads * d))


def test_lockstep_processor_equals_the_formula_on_warped_neighbours():
    attn = _attn()
    frames, groups, grid = 3, 2, (4, 6)
    x = _rand(groups * frames, 24, 16, seed=1)
    flows = torch.zeros(frames, 2, *grid)
    flows[:, 0] = -1.0  # t -> t-1: content came from one token to the left
    masks = torch.rand(frames, 1, *grid, generator=torch.Generator().manual_seed(3))
    bank_index = torch.tensor([[-1, -1], [0, -1], [0, 1]])
    ctx = DualFlowContext(_state(frames), bias_scale=2.0)
    ctx.set_frames(flows, masks, bank_index=bank_index)
    out = DualFlowAttnProcessor("l.attn1", ctx)(attn, x)

    q, k, v = _projections(attn, x)
    expected = []
    for g in range(groups):
        for t in range(frames):
            i = g * frames + t
            m = masks[t].flatten(1)
            groups_kv, biases = [(k[i : i + 1], v[i : i + 1])], [torch.zeros(1, 24)]
            if t > 0:
                j = i - 1
                kp = warp_tokens(k[j : j + 1], flows[t : t + 1], grid)
                vp = warp_tokens(v[j : j + 1], flows[t : t + 1], grid)
                groups_kv.append((kp, vp))
                biases.append(-2.0 * m)
            for s in bank_index[t].tolist():
                if s >= 0:
                    j = g * frames + s
                    groups_kv.append((k[j : j + 1], v[j : j + 1]))
                    biases.append(-2.0 * (1 - m))
            expected.append(_reference(q[i : i + 1], groups_kv, biases, attn.scale))
    torch.testing.assert_close(out, _finish(attn, torch.cat(expected)), atol=1e-5, rtol=1e-5)
    # unused bank columns are dropped, not computed: same result
    ctx.set_frames(flows, masks, bank_index=torch.cat([bank_index, torch.full((3, 2), -1)], dim=1))
    torch.testing.assert_close(DualFlowAttnProcessor("l.attn1", ctx)(attn, x), out)
    # the warp is real: shifting the previous frame's tokens by one column is what was used
    k_prev = warp_tokens(k[0:1], flows[1:2], grid)[0, :, :, :].view(2, 4, 6, 8)
    torch.testing.assert_close(k_prev[:, :, 1:], k[0].view(2, 4, 6, 8)[:, :, :-1])


def test_streaming_processor_matches_lockstep_with_cached_keys():
    """Frame 1 edited after frame 0 (its K/V cached) equals frame 1 in a lockstep batch of both."""
    attn = _attn()
    grid = (4, 6)
    x = _rand(2 * 2, 24, 16, seed=1)  # (uncond f0, uncond f1, cond f0, cond f1)
    flows = _rand(2, 2, *grid, seed=2) * 0.7
    masks = torch.rand(2, 1, *grid, generator=torch.Generator().manual_seed(3))
    lock = DualFlowContext(_state(2), mode="lockstep", bias_scale=3.0)
    lock.set_frames(flows, masks, bank_index=torch.tensor([[-1], [0]]))
    ref = DualFlowAttnProcessor("l.attn1", lock)(attn, x)

    stream = DualFlowContext(_state(1), mode="streaming", bias_scale=3.0)
    proc = DualFlowAttnProcessor("l.attn1", stream)
    stream.record = {}
    stream.set_frames(flows[:1], masks[:1], prev_valid=torch.tensor([False]))
    out0 = proc(attn, x[[0, 2]])
    store0 = stream.record
    assert set(store0) == {("l.attn1", 0)} and store0["l.attn1", 0][0].shape == (2, 2, 24, 8)
    stream.record, stream.prev_kv, stream.bank_kv = {}, store0, [store0]
    stream.set_frames(flows[1:], masks[1:], prev_valid=torch.tensor([True]))
    out1 = proc(attn, x[[1, 3]])
    torch.testing.assert_close(out0, ref[[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out1, ref[[1, 3]], atol=1e-5, rtol=1e-5)
    # a step outside the range neither attends across frames nor records
    stream.step_range = (0.0, 0.25)
    stream.state.update(step_index=2)
    stream.record = {}
    proc(attn, x[[1, 3]])
    assert stream.record == {}


def test_resolution_filter_and_layer_selection(tiny_components):
    attn = _attn()
    x = _rand(4, 24, 16, seed=1)
    ctx = DualFlowContext(_state(2), bias_scale=0.0, resolutions=(2,))  # this layer is at factor 1
    ctx.set_frames(torch.zeros(2, 2, 4, 6), torch.zeros(2, 1, 4, 6))
    torch.testing.assert_close(DualFlowAttnProcessor("l.attn1", ctx)(attn, x), AttnProcessor2_0()(attn, x))
    ctx.resolutions = (1,)
    assert not torch.allclose(DualFlowAttnProcessor("l.attn1", ctx)(attn, x), AttnProcessor2_0()(attn, x))
    names = attention_layer_names(tiny_components.unet)
    up = select_layers(names, ["up_blocks.*"])
    assert up and all(n.startswith("up_blocks.") and n.endswith(".attn1") for n in up)
    assert len(select_layers(names, ["*attn1"])) == len(attention_layer_names(tiny_components.unet, "attn1"))


# ------------------------------------------------------------------------------------------- memory bank


def _flow(dx):
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = dx
    return flow


def test_bank_admits_on_accumulated_motion_and_low_discrepancy():
    bank = MemoryBank(size=2, motion_threshold=2.5, quality_threshold=0.2)
    bank.start(0)
    assert bank.frames == [0]
    assert not bank.observe(1, _flow(-1.0), 0.0).admitted  # 1 px since the anchor
    assert not bank.observe(2, _flow(-1.0), 0.0).admitted  # 2 px
    decision = bank.observe(3, _flow(-1.0), 0.1)  # 3 px > 2.5 and 0.1 < 0.2
    assert decision.admitted and decision.motion == pytest.approx(3.0) and bank.frames == [0, 3]
    assert not bank.observe(4, _flow(-1.0), 0.0).admitted  # motion restarts from the new keyframe
    assert not bank.observe(5, _flow(-1.0), 0.0).admitted
    assert not bank.observe(6, _flow(-1.0), 0.5).admitted  # enough motion, too discrepant
    assert bank.observe(7, _flow(-1.0), 0.0).admitted  # motion kept accumulating: 4 px
    assert bank.observe(8, _flow(-3.0), 0.0).admitted
    assert bank.frames == [0, 7, 8] and bank.history[-1].evicted == 3  # oldest dynamic out, anchor kept
    assert bank.capacity == 3


def test_bank_without_dynamic_slots_or_anchor():
    anchor_only = MemoryBank(size=0, motion_threshold=0.0, quality_threshold=1.0)
    anchor_only.start(0)
    assert not anchor_only.observe(1, _flow(-5.0), 0.0).admitted and anchor_only.frames == [0]
    no_anchor = MemoryBank(size=1, motion_threshold=0.0, quality_threshold=1.0, use_anchor=False)
    no_anchor.start(0)
    assert no_anchor.frames == []
    no_anchor.observe(1, _flow(-1.0), 0.0)
    assert no_anchor.frames == [1] and no_anchor.capacity == 1
    with pytest.raises(RuntimeError, match="start"):
        MemoryBank().observe(1, _flow(0.0), 0.0)


def test_bank_history_is_capped():
    bank = MemoryBank(size=1, motion_threshold=0.0, quality_threshold=1.0, max_history=2)
    bank.start(0)
    for t in range(1, 6):
        bank.observe(t, _flow(-1.0), 0.0)
    assert [a.frame for a in bank.history] == [4, 5] and bank.observed == 5
    bank.start(0)
    assert len(bank.history) == 0 and bank.observed == 0


def test_lockstep_banks_layout():
    flows = torch.cat([_flow(0.0), _flow(-3.0), _flow(-1.0), _flow(-3.0)])
    index = lockstep_banks(MemoryBank(size=1, motion_threshold=2.0), flows, [0.0, 0.0, 0.0, 0.5])
    # frame 1 sees the anchor; frame 1 (3 px) is admitted, so frames 2, 3 see it; frame 3 is too discrepant
    assert index.tolist() == [[-1, -1], [0, -1], [0, 1], [0, 1]]
