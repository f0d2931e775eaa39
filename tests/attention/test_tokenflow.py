"""TokenFlow's tensor functions and processors against straightforward references of the official code."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from videoedit.attention.base import AttentionProcessorBase
from videoedit.attention.install import attention_layer_names, attention_processors
from videoedit.attention.state import StepState
from videoedit.attention.tokenflow import (
    BRANCHES,
    PNP_ATTENTION_LAYERS,
    KeyframeStore,
    PnPConvInjection,
    PropagationPlan,
    TokenFlowAttnProcessor,
    batch_keyframes,
    cosine_nearest_neighbours,
    extended_attention,
    frame_batches,
    injection_timesteps,
    official_blend_plan,
    paper_blend_plan,
    propagate_keyframe_outputs,
    propagation_plan,
    sdedit_timesteps,
)
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import sampling_timesteps
from videoedit.models.components import sd_ddim_scheduler

# ----------------------------------------------------------------------------------- schedules


def test_injection_fractions_give_the_official_step_counts():
    timesteps = sampling_timesteps(sd_ddim_scheduler(), 50)
    qk = injection_timesteps(timesteps, 0.5)
    conv = injection_timesteps(timesteps, 0.8)
    assert len(qk) == 25 and (qk[0], qk[-1]) == (981, 501)
    assert len(conv) == 40 and (conv[0], conv[-1]) == (981, 201)
    assert injection_timesteps(timesteps, 0.0) == []
    assert injection_timesteps(timesteps, 1.0) == timesteps
    assert len(injection_timesteps(list(range(5)), 0.5)) == 2  # int(5 * 0.5)


def test_sdedit_start_official_and_exact():
    timesteps = sampling_timesteps(sd_ddim_scheduler(), 50)
    official = sdedit_timesteps(timesteps, 0.9, "official")
    exact = sdedit_timesteps(timesteps, 0.9, "exact")
    assert (len(official), official[0]) == (44, 861)  # timesteps[int(1 - 45):] = timesteps[-44:]
    assert (len(exact), exact[0]) == (45, 881)
    assert sdedit_timesteps(timesteps, 1.0, "exact") == timesteps
    assert len(sdedit_timesteps(timesteps, 1.0, "official")) == 49  # the official slicing drops t=981
    assert len(sdedit_timesteps(timesteps, 0.58, "exact")) == 29  # 0.58 * 50 = 28.999999999999996
    assert sdedit_timesteps(timesteps[:5], 0.1, "official") == timesteps[:5]  # int(1 - 0.5) = 0: every step
    assert sdedit_timesteps(timesteps[:5], 0.1, "exact") == []
    with pytest.raises(ConfigError, match="sdedit_start_rounding"):
        sdedit_timesteps(timesteps, 0.9, "nope")


# ----------------------------------------------------------------------------------- keyframes and plans


def test_keyframes_one_per_batch_reproducible():
    batches = frame_batches(21, 8)
    assert [list(b) for b in batches][-1] == [16, 17, 18, 19, 20]
    keys = [batch_keyframes(21, 8, "random", torch.Generator().manual_seed(s)) for s in range(20)]
    for k in keys:
        assert len(k) == 3 and all(k[i] in batches[i] for i in range(3))
    assert keys[0] == batch_keyframes(21, 8, "random", torch.Generator().manual_seed(0))
    assert len({tuple(k) for k in keys}) > 1
    # the official draw for full batches: randint(B, (F // B,)) + arange(0, F, B)
    g = torch.Generator().manual_seed(3)
    expected = (torch.randint(8, (4,), generator=g) + torch.arange(0, 32, 8)).tolist()
    assert batch_keyframes(32, 8, "random", torch.Generator().manual_seed(3)) == expected
    assert batch_keyframes(21, 8, "even") == [4, 12, 18]
    with pytest.raises(ConfigError, match="keyframe_sampling must be one of"):
        batch_keyframes(8, 4, "nope")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_keyframes_from_a_cuda_generator():
    g = torch.Generator(device="cuda").manual_seed(3)
    expected = (torch.randint(8, (2,), generator=g, device="cuda").cpu() + torch.arange(0, 16, 8)).tolist()
    keys = batch_keyframes(20, 8, "random", torch.Generator(device="cuda").manual_seed(3))
    assert keys[:2] == expected and 16 <= keys[2] < 20


def test_official_blend_weights():
    batches = frame_batches(24, 8)
    plan = official_blend_plan(batches[1], 1, batches[0])
    s = torch.arange(8, 16, dtype=torch.float64)
    d1, d2 = (s - 12).abs(), (s - 4).abs()  # p1 = 1*8 + 4, p2 = 0*8 + 4
    w1 = torch.sigmoid(d2 / (d1 + d2))
    assert [src[0][0] for src in plan.sources] == [1] * 8 and [src[1][0] for src in plan.sources] == [0] * 8
    got = torch.tensor([src[0][1] for src in plan.sources], dtype=torch.float64)
    torch.testing.assert_close(got, w1)
    torch.testing.assert_close(torch.tensor([src[1][1] for src in plan.sources], dtype=torch.float64), 1 - w1)
    assert got.min() > 0.62 and got.max() < 0.74  # the previous keyframe always keeps 0.27 ... 0.38
    first = propagation_plan(0, batches, [3, 10, 20], "official")
    assert first.sources == (((0, 1.0),),) * 8 and first.keyframes() == [0]
    assert propagation_plan(2, batches, [3, 10, 20], "official").keyframes() == [1, 2]


def test_paper_blend_weights():
    plan = paper_blend_plan([0, 2, 5, 9, 15, 23], [2, 9, 20])
    assert plan.exact == (False, True, False, True, False, False)
    assert plan.sources[0] == ((0, 1.0),)  # before the first keyframe
    assert plan.sources[1] == ((0, 1.0),)  # keyframe 2 itself
    assert plan.sources[2] == ((0, 4 / 7), (1, 3 / 7))  # between 2 and 9
    assert plan.sources[4] == ((1, 5 / 11), (2, 6 / 11))  # between 9 and 20
    assert plan.sources[5] == ((2, 1.0),)  # after the last
    assert plan.keyframes() == [0, 1, 2]
    assert plan.users(1) == ([2, 4], [3 / 7, 5 / 11])
    with pytest.raises(ConfigError, match="blend must be one of"):
        propagation_plan(0, frame_batches(8, 4), [1, 5], "nope")


# ----------------------------------------------------------------------------------- tensor functions


def _batch_cosine_sim(x, y):
    """The official util.batch_cosine_sim."""
    return (x / x.norm(dim=-1, keepdim=True)) @ (y / y.norm(dim=-1, keepdim=True)).T


def test_chunked_nearest_neighbours_equal_the_full_similarity():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(300, 16, generator=g), torch.randn(50, 16, generator=g)
    ref = _batch_cosine_sim(q, k).argmax(dim=-1)
    for chunk in (None, 1, 7, 64, 1000):
        assert torch.equal(cosine_nearest_neighbours(q, k, chunk), ref)
    # scaling a key's norm does not change a cosine match
    assert torch.equal(cosine_nearest_neighbours(q, k * (torch.rand(50, 1, generator=g) * 10 + 0.1), 7), ref)


def _official_gather(norm_src, pivot_src, pivot_out, b, n):
    """TokenFlowBlock's batch pass for batch ``b`` (norm_src (n, N, C), pivot_* per keyframe)."""
    seq, dim = norm_src.shape[1], pivot_out.shape[-1]
    idxs = [b] + ([b - 1] if b > 0 else [])
    sim = _batch_cosine_sim(
        norm_src.reshape(-1, norm_src.shape[-1]), pivot_src[idxs].reshape(-1, pivot_src.shape[-1])
    )
    attn = pivot_out[:, idxs]  # (3, len, N, D)
    if len(idxs) == 1:
        idx1 = torch.stack([sim.argmax(dim=-1)] * 3)
        return attn[:, 0].gather(1, idx1.unsqueeze(-1).repeat(1, 1, dim)).view(3, n, seq, dim)
    sim1, sim2 = sim.chunk(2, dim=1)
    idx1, idx2 = torch.stack([sim1.argmax(-1)] * 3), torch.stack([sim2.argmax(-1)] * 3)
    a1 = attn[:, 0].gather(1, idx1.unsqueeze(-1).repeat(1, 1, dim)).view(3, n, seq, dim)
    a2 = attn[:, 1].gather(1, idx2.unsqueeze(-1).repeat(1, 1, dim)).view(3, n, seq, dim)
    s = torch.arange(n) + b * n
    d1, d2 = (s - (b * n + n // 2)).abs(), (s - ((b - 1) * n + n // 2)).abs()
    w1 = torch.sigmoid(d2 / (d1 + d2)).view(1, n, 1, 1)
    return w1 * a1 + (1 - w1) * a2


def test_propagation_equals_the_official_gather_on_random_features():
    g = torch.Generator().manual_seed(1)
    n, seq, c, d, kf = 4, 20, 8, 6, 3
    batches = frame_batches(n * kf, n)
    pivot_src = torch.randn(kf, seq, c, generator=g)
    pivot_out = torch.randn(3, kf, seq, d, generator=g)
    for b in range(kf):
        queries = torch.randn(n, seq, c, generator=g)
        plan = propagation_plan(b, batches, [0, 5, 9], "official")
        for chunk in (None, 13):
            got = propagate_keyframe_outputs(queries, pivot_src, pivot_out, plan, chunk)
            torch.testing.assert_close(got, _official_gather(queries, pivot_src, pivot_out, b, n))


def test_paper_propagation_reference_and_exact_keyframes():
    g = torch.Generator().manual_seed(2)
    seq, c, d = 12, 8, 5
    keyframes = [1, 6]
    tokens, outputs = torch.randn(2, seq, c, generator=g), torch.randn(3, 2, seq, d, generator=g)
    frames = [0, 1, 3]
    queries = torch.randn(3, seq, c, generator=g)
    got = propagate_keyframe_outputs(
        queries, tokens, outputs, paper_blend_plan(frames, keyframes), chunk_size=5
    )
    nn0 = _batch_cosine_sim(queries[0], tokens[0]).argmax(-1)
    torch.testing.assert_close(got[:, 0], outputs[:, 0, nn0])  # before the first keyframe
    torch.testing.assert_close(got[:, 1], outputs[:, 0])  # keyframe 1 copies its own output
    a, b = (
        _batch_cosine_sim(queries[2], tokens[0]).argmax(-1),
        _batch_cosine_sim(queries[2], tokens[1]).argmax(-1),
    )
    torch.testing.assert_close(got[:, 2], 0.6 * outputs[:, 0, a] + 0.4 * outputs[:, 1, b])  # (6-3)/(6-1)


def _reference_extended(q, k, v, num_frames, scale, window=None):
    """The official sa_forward: keys/values of all frames concatenated and repeated per frame."""
    gf = q.shape[0]
    out = torch.empty_like(q)
    for g0 in range(0, gf, num_frames):
        for f in range(num_frames):
            if window is None:
                frames = list(range(num_frames))
            else:
                length = min(2 * window + 1, num_frames)
                start = min(max(f - window, 0), num_frames - length)
                frames = list(range(start, start + length))
            kk = torch.cat([k[g0 + j] for j in frames], dim=1)  # (heads, L*N, d)
            vv = torch.cat([v[g0 + j] for j in frames], dim=1)
            attn = (q[g0 + f] @ kk.transpose(-1, -2) * scale).softmax(-1)
            out[g0 + f] = attn @ vv
    return out


def test_extended_attention_equals_the_reference():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2 * 5, 2, 7, 4, generator=g) for _ in range(3))
    scale = 0.5
    torch.testing.assert_close(extended_attention(q, k, v, 5, scale), _reference_extended(q, k, v, 5, scale))
    for window in (0, 1, 2, 9):
        torch.testing.assert_close(
            extended_attention(q, k, v, 5, scale, window), _reference_extended(q, k, v, 5, scale, window)
        )
    # one frame: plain attention
    one = extended_attention(q[:1], k[:1], v[:1], 1, scale)
    torch.testing.assert_close(
        one, torch.nn.functional.scaled_dot_product_attention(q[:1], k[:1], v[:1], scale=scale)
    )


# ----------------------------------------------------------------------------------- processors in the UNet


class ReferenceKeyframeProcessor(AttentionProcessorBase):
    """Per-frame attention for the source branch, the official repeated-K/V extended attention for the rest."""

    def __init__(self, state):
        self.state = state

    def attend(self, attn, query, key, value, call):
        f = self.state.num_frames
        src = _reference_extended(query[:f], key[:f], value[:f], 1, attn.scale)
        rest = _reference_extended(query[f:], key[f:], value[f:], f, attn.scale)
        return torch.cat([src, rest])


def _assert_caches_own_their_storage(store, names):
    """Every cached tensor holds exactly its own elements (no view keeping a whole UNet batch alive)."""
    for name in names:
        cache = store.cache(name)
        for t in (cache.tokens, cache.outputs):
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name


def _three_branch_inputs(num_frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * num_frames, 4, 16, 16, generator=g)
    text = torch.randn(3, 77, 32, generator=g).repeat_interleave(num_frames, dim=0)
    return x, text


def test_every_frame_a_keyframe_equals_extended_attention_over_all_frames(tiny_components):
    unet = tiny_components.unet
    num_frames = 3
    x, text = _three_branch_inputs(num_frames)
    state = StepState(timestep=10, num_frames=num_frames, branches=BRANCHES, latent_size=(16, 16))
    with attention_processors(
        unet, lambda name: ReferenceKeyframeProcessor(state) if name.endswith("attn1") else None
    ):
        reference = unet(x, 10, text).sample

    store = KeyframeStore(state, nn_chunk_size=50)
    names = attention_layer_names(unet, "attn1")
    with attention_processors(unet, {n: TokenFlowAttnProcessor(n, store) for n in names}):
        with store.pass_("keyframes"):
            keyframe_eps = unet(x, 10, text).sample
        torch.testing.assert_close(keyframe_eps, reference, rtol=1e-4, atol=1e-5)
        assert store.cache(names[0]).outputs.shape[:2] == (3, num_frames)
        assert store.cache(names[0]).tokens.shape[0] == num_frames
        _assert_caches_own_their_storage(store, names)
        batches = frame_batches(num_frames, 1)
        keyframes = list(range(num_frames))
        # "exact" plans copy each keyframe's output; the nearest-neighbour plans search each frame's own
        # keyframe, find every token itself and gather it (the search, gather and branch layout in the UNet)
        exact_plans = [propagation_plan(b, batches, keyframes, "paper") for b in range(num_frames)]
        nn_plans = [PropagationPlan(sources=(((b, 1.0),),), exact=(False,)) for b in range(num_frames)]
        assert all(p.exact == (True,) for p in exact_plans)
        for plans in (exact_plans, nn_plans):
            per_frame = []
            for b, plan in enumerate(plans):
                state.update(num_frames=1, frame_ids=(b,))
                rows = x.view(3, num_frames, *x.shape[1:])[:, b]
                with store.pass_("propagate", plan):
                    per_frame.append(unet(rows, 10, text.view(3, num_frames, 77, 32)[:, b]).sample)
            propagated = torch.stack(per_frame, dim=1).reshape(3 * num_frames, 4, 16, 16)
            torch.testing.assert_close(propagated, keyframe_eps)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


def test_off_mode_is_plain_attention_and_propagation_needs_a_keyframe_pass(tiny_components):
    unet = tiny_components.unet
    x, text = _three_branch_inputs(2, seed=1)
    reference = unet(x, 10, text).sample
    state = StepState(timestep=10, num_frames=2, branches=BRANCHES, latent_size=(16, 16))
    store = KeyframeStore(state, qk_timesteps=[10])
    names = attention_layer_names(unet, "attn1")
    with attention_processors(
        unet, {n: TokenFlowAttnProcessor(n, store, n in PNP_ATTENTION_LAYERS) for n in names}
    ):
        torch.testing.assert_close(unet(x, 10, text).sample, reference, rtol=1e-5, atol=1e-5)
        plan = propagation_plan(0, frame_batches(2, 2), [0], "official")
        with pytest.raises(RuntimeError, match="run the keyframe pass"), store.pass_("propagate", plan):
            unet(x, 10, text)
    assert store.mode == "off" and store.plan is None
    with pytest.raises(ValueError, match="needs a PropagationPlan"), store.pass_("propagate"):
        pass


def test_pnp_layers_exist_in_the_sd_topology(tiny_components):
    names = set(attention_layer_names(tiny_components.unet, "attn1"))
    assert len(names) == 16 and set(PNP_ATTENTION_LAYERS) <= names and len(PNP_ATTENTION_LAYERS) == 8
    assert "up_blocks.1.attentions.0.transformer_blocks.0.attn1" not in PNP_ATTENTION_LAYERS


def test_conv_hook_copies_the_source_branch_at_its_timesteps():
    state = StepState(timestep=981, num_frames=2, branches=BRANCHES)
    store = KeyframeStore(state, conv_timesteps=[981])
    hook = PnPConvInjection(store)
    h = torch.randn(6, 3, 4, 4)
    assert hook(None, (), h) is None  # mode "off"
    with store.pass_("keyframes"):
        out = hook(None, (), h)
        state.update(timestep=961)
        assert hook(None, (), h) is None
    assert torch.equal(out[:2], h[:2]) and torch.equal(out[2:4], h[:2]) and torch.equal(out[4:], h[:2])
    assert not torch.equal(h[2:4], h[:2])  # the input is not modified in place


def test_store_offload_and_size():
    state = StepState(num_frames=2, branches=BRANCHES)
    batch = torch.randn(6, 5, 4)  # a (3K, N, C) norm1 output; the source branch is its first K rows
    outputs = torch.randn(6, 5, 4)
    for device in (None, "cpu"):
        store = KeyframeStore(state, cache_device=device)
        store.save_tokens("a", batch[state.branch_slice("source")])
        store.save_outputs("a", outputs)
        cache = store.cache("a")
        assert cache.outputs.shape == (3, 2, 5, 4) and torch.equal(cache.outputs.reshape(6, 5, 4), outputs)
        assert torch.equal(cache.tokens, batch[:2])
        _assert_caches_own_their_storage(store, ["a"])  # the tokens are a copy, not a view of the batch
        assert store.nbytes() == (2 * 5 * 4 + 6 * 5 * 4) * 4
        store.clear()
        assert store.nbytes() == 0
        with pytest.raises(RuntimeError, match="run the keyframe pass"):
            store.cache("a")
