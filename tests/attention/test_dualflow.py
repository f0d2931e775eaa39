import math

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from videoedit.attention.dualflow import (
    DualFlowAttnProcessor,
    DualFlowContext,
    KeyGroup,
    MemoryBank,
    blend_reuse_attention,
    dualflow_attention,
    dualflow_bias,
    flow_window,
    grouped_attention,
    lockstep_banks,
    mask_to_tokens,
    select_layers,
    warp_tokens,
    window_reuse_attention,
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


# ------------------------------------------------------------------------------- flow-aligned reuse

FORMS = ("global", "window", "blend")


def _dense_window_reference(q, k, v, kp, vp, kb, vb, bank_valid, flow, mask, prev_valid, lam, gamma, prior,
                            size=3):  # fmt: skip
    """Straightforward joint softmax over [own | ALL previous-frame tokens with a dense bias that is -inf
    outside each query's window | bank], one item at a time."""
    b, _, n, d = q.shape
    h, w = flow.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    px, py = xs.flatten(), ys.flatten()
    r = size // 2
    out = []
    for i in range(b):
        tx, ty = (xs + flow[i, 0]).flatten(), (ys + flow[i, 1]).flatten()
        inside = ((px[None] - tx.round()[:, None]).abs() <= r) & ((py[None] - ty.round()[:, None]).abs() <= r)
        near = torch.where(inside, -gamma * ((px[None] - tx[:, None]) ** 2 + (py[None] - ty[:, None]) ** 2),
                           torch.tensor(float("-inf")))  # fmt: skip
        if prior is None:
            beta = math.log(n) - near.logsumexp(-1, keepdim=True)
            beta = torch.where(torch.isfinite(beta), beta, 0.0)
        else:
            beta = prior
        prev = near + beta - lam * mask[i][:, None]
        if not prev_valid[i]:
            prev = torch.full_like(prev, float("-inf"))
        slots = bank_valid.shape[1]
        bank = (-lam * (1 - mask[i]))[:, None].repeat(1, slots * n)
        for s in range(slots):
            if not bank_valid[i, s]:
                bank[:, s * n : (s + 1) * n] = float("-inf")
        bias = torch.cat([torch.zeros(n, n), prev, bank], 1)
        keys, values = torch.cat([k[i], kp[i], kb[i]], 1), torch.cat([v[i], vp[i], vb[i]], 1)
        scores = torch.einsum("hnd,hmd->hnm", q[i], keys) * d**-0.5 + bias
        out.append(torch.einsum("hnm,hmd->hnd", scores.softmax(-1), values))
    return torch.stack(out)


def test_flow_window_centres_on_the_flow_target():
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # t -> t-1: content came from 2 right, 1 up
    win = flow_window(flow, 3)
    assert win.index.shape == win.valid.shape == win.dist2.shape == (1, 24, 9)
    p = 2 * 6 + 1  # query (y=2, x=1): target (y=1, x=3), window centre = slot 4 (row-major 3x3)
    assert win.index[0, p, 4] == 1 * 6 + 3 and win.dist2[0, p, 4] == 0 and win.valid[0, p].all()
    assert win.index[0, p].tolist() == [y * 6 + x for y in (0, 1, 2) for x in (2, 3, 4)]
    assert win.dist2[0, p].tolist() == [2.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 2.0]
    # query (y=0, x=3): target (y=-1, x=5) above the grid; only (y=0, x=4..5) of its window lies inside
    assert win.valid[0, 3].tolist() == [False] * 6 + [True, True, False]
    assert win.index[0, 3, 6:8].tolist() == [4, 5] and win.dist2[0, 3, 6:8].tolist() == [2.0, 1.0]
    assert not win.valid[0, 5].any()  # target (y=-1, x=7): the whole window is outside
    # sub-token targets: the window is centred on the rounded target, distances from the exact one
    flow[:, 0], flow[:, 1] = 0.4, 0.0
    win = flow_window(flow, 1)
    assert win.index[0, :, 0].tolist() == list(range(24)) and torch.allclose(win.dist2, torch.tensor(0.16))
    bad = flow.clone()
    bad[0, 0, 0, 0] = float("nan")
    assert not flow_window(bad, 3).valid[0, 0].any() and flow_window(bad, 3).valid[0, 1].any()
    with pytest.raises(ValueError, match="odd number"):
        flow_window(flow, 2)


def _window_inputs(b=3, h=2, grid=(4, 5), d=6, slots=2):
    n = grid[0] * grid[1]
    q, k, v, kp, vp = (_rand(b, h, n, d, seed=s) for s in range(1, 6))
    kb, vb = _rand(b, h, slots * n, d, seed=6), _rand(b, h, slots * n, d, seed=7)
    flow = _rand(b, 2, *grid, seed=8) * 1.5
    mask = torch.rand(b, n, generator=torch.Generator().manual_seed(9))
    return q, k, v, kp, vp, kb, vb, flow, mask


@pytest.mark.parametrize("prior", [None, 1.5])
def test_window_attention_equals_the_dense_reference(prior):
    q, k, v, kp, vp, kb, vb, flow, mask = _window_inputs()
    bank_valid = torch.tensor([[True, False], [True, True], [False, False]])
    prev_valid = torch.tensor([True, True, False])
    ref = _dense_window_reference(
        q, k, v, kp, vp, kb, vb, bank_valid, flow, mask, prev_valid, 3.0, 0.7, prior
    )
    for chunk in (None, 2):
        out = window_reuse_attention(q, k, v, mask, 3.0, None, kp, vp, prev_valid, flow_window(flow, 3), 0.7,
                                     prior, kb, vb, bank_valid, chunk_size=chunk)  # fmt: skip
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # without a previous frame or bank it is plain attention
    torch.testing.assert_close(
        window_reuse_attention(q, k, v, mask, 3.0, None, None, None, None, None),
        torch.nn.functional.scaled_dot_product_attention(q, k, v),
    )


def test_the_window_prior_gives_the_global_forms_weight_to_the_previous_frame():
    """With equal scores (zero queries) the previous frame's share of attention is the same in the global
    form and in the window form with the default prior, at every M."""
    b, h, n, d = 1, 1, 20, 4
    q = torch.zeros(b, h, n, d)
    k, kp = _rand(b, h, n, d, seed=1), _rand(b, h, n, d, seed=2)
    v, vp = torch.zeros(b, h, n, d), torch.zeros(b, h, n, d)
    vp[..., 0] = 1.0  # channel 0 of the output = the previous frame's share
    mask = torch.linspace(0, 1, n)[None]
    share_global = dualflow_attention(q, k, v, mask, 2.0, None, kp, vp)[0, 0, :, 0]
    flow = _rand(b, 2, 4, 5, seed=3)
    share_window = window_reuse_attention(q, k, v, mask, 2.0, None, kp, vp, None, flow_window(flow, 3), 0.5)
    torch.testing.assert_close(share_window[0, 0, :, 0], share_global, atol=1e-6, rtol=1e-5)


def test_grouped_attention_equals_the_explicit_softmax_in_float32_and_float16():
    b, h, n, d = 2, 2, 6, 8
    q, k, v, k2, v2 = (_rand(b, h, n, d, seed=s) for s in range(1, 6))
    row = -3.0 * torch.rand(b, n, generator=torch.Generator().manual_seed(6))
    off = torch.zeros(b, n, dtype=torch.bool)
    off[1, 2:] = True
    sink = _rand(b, h, n, seed=7)
    scale = d**-0.5
    scores = torch.cat([torch.einsum("bhnd,bhmd->bhnm", q, x) * scale for x in (k, k2)], -1)
    bias = torch.cat([torch.zeros(b, 1, n, n), row[:, None, :, None].expand(b, 1, n, n).clone()], -1)
    bias[..., n:] = bias[..., n:].masked_fill(off[:, None, None, :], float("-inf"))
    scores = torch.cat([scores + bias, sink[..., None]], -1)
    weights = scores.softmax(-1)
    ref = torch.einsum("bhnm,bhmd->bhnd", weights[..., :-1], torch.cat([v, v2], 2))
    out, w = grouped_attention(q, [KeyGroup(k, v), KeyGroup(k2, v2, row, off)], scale, sink)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, weights[..., -1], atol=1e-6, rtol=1e-5)
    # half precision with hard gating (lambda 1e4) and an empty sink (-inf): finite and close
    hard = KeyGroup(k2.half(), v2.half(), torch.full((b, n), -1e4), off)
    out16, w16 = grouped_attention(q.half(), [KeyGroup(k.half(), v.half()), hard], scale,
                                   torch.full((b, h, n), float("-inf")))  # fmt: skip
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(out16).all() and (w16 == 0).all()
    torch.testing.assert_close(out16.float(), plain, atol=2e-2, rtol=2e-2)


def test_blend_equals_its_formula():
    q, k, v, _, vp, kb, vb, flow, mask = _window_inputs()
    bank_valid = torch.tensor([[True, False], [True, True], [False, False]])
    prev_valid = torch.tensor([True, False, True])
    warped = warp_tokens(vp, flow, (4, 5))
    out = blend_reuse_attention(q, k, v, mask, 3.0, None, warped, prev_valid, 0.4, kb, vb, bank_valid, 2)
    # A: own + bank with the dual-flow bias and no previous frame (dualflow_attention's reference)
    attended = torch.cat([
        dualflow_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1], mask[i : i + 1], 3.0, None,
                           key_bank=kb[i : i + 1], value_bank=vb[i : i + 1], bank_valid=bank_valid[i : i + 1])
        for i in range(3)
    ])  # fmt: skip
    gate = (0.4 * (1 - mask) * prev_valid[:, None].float())[:, None, :, None]
    torch.testing.assert_close(out, (1 - gate) * attended + gate * warped, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["window", "blend"])
def test_aligned_forms_keep_the_bias_semantics(form):
    """As the global form (test above): a discrepant query reads the bank, a consistent one the
    previous frame (values mark their group: channel 0 previous frame, channel 1 bank)."""
    b, h, n, d = 1, 1, 2, 4
    q = _rand(b, h, n, d, seed=1) * 0.1
    k, kp, kb = (_rand(b, h, n, d, seed=s) * 0.1 for s in (2, 3, 4))
    v, vp, vb = torch.zeros(b, h, n, d), torch.zeros(b, h, n, d), torch.zeros(b, h, n, d)
    vp[..., 0], vb[..., 1] = 1.0, 1.0
    mask = torch.tensor([[1.0, 0.0]])  # token 0 discrepant, token 1 consistent
    bank = dict(key_bank=kb, value_bank=vb, bank_valid=torch.ones(1, 1, dtype=torch.bool))
    for lam, tiny in ((1e4, 1e-6), (10.0, 1e-3)):
        if form == "window":
            out = window_reuse_attention(q, k, v, mask, lam, None, kp, vp, None,
                                         flow_window(torch.zeros(1, 2, 1, 2), 3), **bank)  # fmt: skip
        else:
            out = blend_reuse_attention(q, k, v, mask, lam, None, vp, None, 0.5, **bank)
        prev_w, bank_w = out[0, 0, :, 0], out[0, 0, :, 1]
        assert prev_w[0] < tiny and bank_w[0] > 0.3
        assert bank_w[1] < tiny and prev_w[1] > 0.3


def _two_frame_context(mode, form, flow, grid=(4, 6), **reuse):
    """Frame 1 of a two-frame edit with ``flow`` (t -> t-1, tokens), M = 0, no bank: returns a function
    ``x0, x1 (2, N, C) CFG batches -> frame 1's output (2, N, C)``."""
    attn = _attn()
    masks = torch.zeros(2, 1, *grid)
    flows = torch.stack([torch.zeros(2, *grid), flow])

    @torch.no_grad()
    def run(x0, x1):
        if mode == "lockstep":
            ctx = DualFlowContext(_state(2, latent=grid), bias_scale=10.0, prev_reuse=form, **reuse)
            ctx.set_frames(flows, masks, bank_index=torch.full((2, 1), -1))
            out = DualFlowAttnProcessor("l.attn1", ctx)(attn, torch.stack([x0[0], x1[0], x0[1], x1[1]]))
            return out[[1, 3]]
        ctx = DualFlowContext(
            _state(1, latent=grid), mode="streaming", bias_scale=10.0, prev_reuse=form, **reuse
        )
        proc = DualFlowAttnProcessor("l.attn1", ctx)
        ctx.record = {}
        ctx.set_frames(flows[:1], masks[:1], prev_valid=torch.tensor([False]))
        proc(attn, x0)
        ctx.prev_kv, ctx.record = ctx.record, {}
        ctx.set_frames(flows[1:], masks[1:], prev_valid=torch.tensor([True]))
        return proc(attn, x1)

    return attn, run


def _moved(x0, dx, dy, grid=(4, 6), seed=11):
    """Frame 1 = frame 0 moved by (-dx, -dy): token p of frame 1 shows token p + (dx, dy) of frame 0
    (flow t -> t-1 = (dx, dy)); tokens whose source is outside are new random content."""
    h, w = grid
    x1 = _rand(*x0.shape, seed=seed)
    g0, g1 = x0.view(2, h, w, -1), x1.view(2, h, w, -1)
    inside = torch.zeros(h, w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                g1[:, y, x] = g0[:, y + dy, x + dx]
                inside[y, x] = True
    return x1, inside.flatten()


@pytest.mark.parametrize("mode", ["lockstep", "streaming"])
def test_shuffling_the_previous_frame_changes_the_aligned_forms_only(mode):
    """Issue 11 (a): permuting the previous frame's tokens away from their flow correspondence leaves the
    global form unchanged (softmax ignores key order: with zero flow the warp is the identity) but
    changes the window and blend forms materially."""
    x0 = _rand(2, 24, 16, seed=1)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(2))
    for flow_xy in ((0.0, 0.0), (1.0, -1.0)):
        flow = torch.zeros(2, 4, 6)
        flow[0], flow[1] = flow_xy
        x1, _ = _moved(x0, int(flow_xy[0]), int(flow_xy[1]))
        change = {}
        for form in FORMS:
            _, run = _two_frame_context(mode, form, flow)
            out, shuffled = run(x0, x1), run(x0[:, perm], x1)
            change[form] = float((shuffled - out).norm() / out.norm())
        if flow_xy == (0.0, 0.0):
            assert change["global"] < 1e-5, change
        assert change["window"] > 0.1 and change["blend"] > 0.1, change


@pytest.mark.parametrize("mode", ["lockstep", "streaming"])
def test_oracle_moved_features_read_the_warped_previous_value(mode):
    """Issue 11 (b): frame 1's features are frame 0's moved by a known integer flow, M = 0 and the prior
    is strong: each query's output is frame 0's value at its flow target (through the output
    projection). The global form, which ignores where the keys are, does not do this."""
    x0 = _rand(2, 24, 16, seed=1)
    dx, dy = 1, -1
    x1, inside = _moved(x0, dx, dy)
    flow = torch.zeros(2, 4, 6)
    flow[0], flow[1] = dx, dy
    target = (torch.arange(24) // 6 + dy).clamp(0, 3) * 6 + (torch.arange(24) % 6 + dx).clamp(0, 5)
    strong = {"window": dict(window_prior=40.0, distance_bias=40.0), "blend": dict(blend_weight=1.0)}
    for form in FORMS:
        attn, run = _two_frame_context(mode, form, flow, **strong.get(form, {}))
        out = run(x0, x1)
        with torch.no_grad():
            expected = attn.to_out[0](attn.to_v(x0)[:, target])
        err = (out - expected)[:, inside].abs().max()
        if form == "global":
            assert err > 0.05, err
        else:
            assert err < 1e-5, (form, err)
