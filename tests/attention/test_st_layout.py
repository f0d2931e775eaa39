import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from videoedit.attention.st_layout import (
    FrameSpan,
    SelfModulation,
    cross_attention,
    full_frame_attention,
    modulate_logits,
    reference_full_frame_attention,
)
from videoedit.layout.regions import build_layer_layouts


def _qkv(heads=2, frames=3, tokens=16, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(heads, frames * tokens, d, generator=g) for _ in range(3)]


def _layout(frames=3, grid=4, regions=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(frames, regions, grid, grid, generator=g) > 0.5  # random, overlapping regions
    return build_layer_layouts(masks, (grid, grid), torch.full((77,), -1), factors=(1,))[1]


def test_modulate_logits_is_the_official_two_step_formula():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 7, generator=g)
    m = torch.rand(5, 7, generator=g) > 0.5
    w = torch.rand(5, generator=g)
    hi, lo = s.amax(-1, keepdim=True), s.amin(-1, keepdim=True)
    ref = s + m * w[:, None] * (hi - s)
    ref = ref - (~m) * w[:, None] * (ref - lo)
    torch.testing.assert_close(modulate_logits(s.clone(), m, w), ref)


@pytest.mark.parametrize("budget", [1, 2_000, 10**9])  # 1 query row per chunk, a few rows, everything at once
@pytest.mark.parametrize("span", [FrameSpan("all"), FrameSpan("window", 2)])
def test_chunked_modulated_attention_equals_the_full_matrix_reference(budget, span):
    q, k, v = _qkv()
    layout = _layout()
    member = layout.flat_member()
    weight = 0.3 * 0.9
    out = full_frame_attention(
        q, k, v, 3, 0.35, span, SelfModulation(member, layout.self_size, weight), budget
    )
    if span.mode == "all":
        pair = (member @ member.T) > 0
        size = layout.self_size(member, member, 3)
        ref = reference_full_frame_attention(q, k, v, 3, 0.35, pair, size, weight)
    else:  # per query frame: its window's keys and the window-sized normaliser
        ref = torch.empty_like(q)
        n = 16
        for f in range(3):
            frames = span.key_frames(f, 3)
            idx = torch.cat([torch.arange(kf * n, (kf + 1) * n) for kf in frames])
            mq, mk = member[f * n : (f + 1) * n], member[idx]
            logits = (
                torch.einsum("hqd,hkd->hqk", q[:, f * n : (f + 1) * n].double(), k[:, idx].double()) * 0.35
            )
            pos = (mq @ mk.T) > 0
            size = layout.self_size(mq, mk, len(frames)).double()
            hi, lo = logits.amax(-1, keepdim=True), logits.amin(-1, keepdim=True)
            logits = logits + pos * (size * weight)[:, None] * (hi - logits)
            logits = logits - (~pos) * (size * weight)[:, None] * (logits - lo)
            ref[:, f * n : (f + 1) * n] = (logits.softmax(-1) @ v[:, idx].double()).float()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_modulation_off_is_plain_full_frame_attention():
    q, k, v = _qkv()
    plain = reference_full_frame_attention(q, k, v, 3, 0.35)
    layout = _layout()
    off = full_frame_attention(
        q, k, v, 3, 0.35, modulation=SelfModulation(layout.flat_member(), layout.self_size, 0.0)
    )
    torch.testing.assert_close(off, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        full_frame_attention(q, k, v, 3, 0.35, chunk_budget_bytes=1, record=lambda *a: None),
        plain,
        rtol=1e-5,
        atol=1e-5,
    )


def test_window_span_frames():
    span = FrameSpan("window", 3)
    assert span.key_frames(0, 8) == [0, 1, 2]
    assert span.key_frames(5, 8) == [0, 4, 5, 6]
    assert span.key_frames(7, 8) == [0, 5, 6, 7]
    groups = list(span.groups(8))
    assert [g[0] for g in groups][:2] == [[0, 1], [2]]
    assert sorted(f for g in groups for f in g[0]) == list(range(8))


def test_one_frame_equals_attnprocessor2_0(tiny_components):
    from videoedit.attention.install import attention_layer_names
    from videoedit.attention.state import StepState
    from videoedit.attention.videograin import VideoGrainController, VideoGrainSelfAttnProcessor

    unet = tiny_components.unet
    name = attention_layer_names(unet, "attn1")[0]
    attn = dict(unet.named_modules())[name]
    x = torch.randn(2, 64, attn.to_q.in_features, generator=torch.Generator().manual_seed(0))
    state = StepState(num_frames=1, branches=("uncond", "cond"), latent_size=(8, 8))
    proc = VideoGrainSelfAttnProcessor(VideoGrainController(state=state), name)
    torch.testing.assert_close(proc(attn, x), AttnProcessor2_0()(attn, x), rtol=1e-5, atol=1e-5)


def test_cross_attention_modulation_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 2, 6, 4, generator=g)
    k = torch.randn(2, 2, 77, 4, generator=g)
    v = torch.randn(2, 2, 77, 4, generator=g)
    pos = torch.rand(2, 6, 77, generator=g) > 0.7
    strength = torch.rand(2, 6, generator=g)
    out = cross_attention(q, k, v, 0.5, pos, strength)
    s = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) * 0.5
    hi, lo = s.amax(-1, keepdim=True), s.amin(-1, keepdim=True)
    m, w = pos[:, None].double(), strength[:, None, :, None].double()
    s = s + m * w * (hi - s)
    s = s - (1 - m) * w * (s - lo)
    torch.testing.assert_close(out, (s.softmax(-1) @ v.double()).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        cross_attention(q, k, v, 0.5), torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.5)
    )


def _allowance(q, span, num_frames, regions, compute):
    """What a call may hold besides its chunk budget: its output, and per key group the gathered keys and
    values (window span), their compute-dtype copies and the gathered/converted key memberships."""
    heads, total, d = q.shape
    n = total // num_frames
    e_in, e_c = q.element_size(), torch.finfo(compute).bits // 8
    worst = 0
    for _, key_frames in span.groups(num_frames):
        keys = len(key_frames) * n
        gathered = 2 * heads * keys * d * e_in if len(key_frames) < num_frames else 0
        converted = 2 * heads * keys * d * e_c if compute != q.dtype else 0
        member = keys * regions * (4 + e_c)
        worst = max(worst, gathered + converted + member)
    return q.numel() * q.element_size() + worst


@pytest.mark.parametrize(
    ("heads", "dtype", "span", "record"),
    [
        (1, torch.float32, FrameSpan("all"), False),  # one head: 1.33x the budget before the fix
        (8, torch.float32, FrameSpan("all"), True),
        (1, torch.bfloat16, FrameSpan("all"), True),
        (8, torch.bfloat16, FrameSpan("window", 2), False),
        (1, torch.float32, FrameSpan("window", 2), True),
    ],
)
def test_peak_memory_is_the_chunk_budget_plus_the_inputs(heads, dtype, span, record):
    """Counted exactly (every tensor allocated inside the call, until it is freed): the chunks' scores,
    pair masks and the rest stay within ``chunk_budget_bytes``; the previous chunk's buffers are freed
    before the next chunk allocates (with them alive, one head peaked at 1.33x the budget)."""
    from videoedit.metrics.tensor_memory import LiveTensorBytes

    frames, grid, d = 4, 8, 16
    q, k, v = (x.to(dtype) for x in _qkv(heads=heads, frames=frames, tokens=grid * grid, d=d))
    layout = _layout(frames=frames, grid=grid)
    member = layout.flat_member()
    budget = 96 * 2**10
    maps = []
    recorder = (lambda probs, qf, kf, off: maps.append(probs.float().mean(0).shape)) if record else None
    with LiveTensorBytes() as mem:
        out = full_frame_attention(
            q, k, v, frames, 0.25, span, SelfModulation(member, layout.self_size, 0.27), budget, recorder
        )
    assert torch.isfinite(out).all() and out.dtype == dtype
    compute = torch.float32  # CPU: half inputs are computed in fp32
    allowance = _allowance(q, span, frames, member.shape[1], compute)
    assert mem.peak - allowance <= budget, (mem.peak, allowance, budget)
    if span.mode == "all" and dtype == torch.float32:  # the allowance is exact here (nothing converted)
        assert mem.peak - allowance > budget // 2  # and the chunks do use their budget (few, large ones)
    assert not record or len(maps) > 1  # several chunks per call
