"""Consistent self-attention (StoryDiffusion) over sliding tiles: identities, tiling, determinism, ddim use."""

import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from tests.conftest import FAST
from videoedit.attention.base import AttentionCall
from videoedit.attention.consistent import (
    ConsistentSelfAttention,
    ConsistentSelfAttnProcessor,
    sample_token_indices,
    tile_seed,
    tile_starts,
)
from videoedit.attention.install import attention_layer_names, attention_processors
from videoedit.attention.state import StepState
from videoedit.edit import edit
from videoedit.errors import ConfigError
from videoedit.methods.base import EditRequest
from videoedit.methods.ddim import DDIMMethod
from videoedit.pipelines.pipeline_ddim import DDIMEditPipeline

LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"


def _state(num_frames: int, branches=("uncond", "cond"), step: int = 0) -> StepState:
    return StepState(phase="sample", step_index=step, num_frames=num_frames, branches=branches)


def _unet_run(unet, num_frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * num_frames, 4, 8, 8, generator=g)
    text = torch.randn(2 * num_frames, 77, 32, generator=g)
    return unet(x, 10, text).sample


def _layer(unet, name: str = LAYER):
    return dict(unet.named_modules())[name]


def _extended_reference(attn, x: torch.Tensor, tiles: list[list[int]], num_frames: int) -> torch.Tensor:
    """Plain softmax over the concatenated K/V of each tile (per branch), averaged over a frame's tiles,
    then the output projection. ``x (B, N, C)`` with ``B = branches * F``."""
    b, n, _ = x.shape
    heads = attn.heads

    def split(t):
        return t.view(b, n, heads, -1).transpose(1, 2)  # (B, heads, N, d)

    q, k, v = split(attn.to_q(x)), split(attn.to_k(x)), split(attn.to_v(x))
    out = torch.zeros_like(q)
    for branch in range(b // num_frames):
        base = branch * num_frames
        for f in range(num_frames):
            mine = [t for t in tiles if f in t]
            for tile in mine:
                keys = torch.cat([k[base + j] for j in tile], dim=1)  # (heads, T*N, d)
                values = torch.cat([v[base + j] for j in tile], dim=1)
                w = torch.softmax(q[base + f] @ keys.transpose(-1, -2) * attn.scale, dim=-1)
                out[base + f] += (w @ values) / len(mine)
    out = out.transpose(1, 2).reshape(b, n, heads * q.shape[-1])
    return attn.to_out[1](attn.to_out[0](out))


# ------------------------------------------------------------------------------------ tiling


@pytest.mark.parametrize(
    ("frames", "size", "stride", "expected"),
    [
        (3, 8, 4, [0]),
        (8, 8, 4, [0]),
        (10, 4, 2, [0, 2, 4, 6]),
        (11, 4, 3, [0, 3, 6, 7]),
        (5, 2, 2, [0, 2, 3]),
    ],
)
def test_tiles_cover_every_frame_with_full_tiles(frames, size, stride, expected):
    starts = tile_starts(frames, size, stride)
    assert starts == expected
    covered = set()
    for s in starts:
        tile = range(s, min(s + size, frames))
        assert len(tile) == min(size, frames)
        covered |= set(tile)
    assert covered == set(range(frames))


def test_bad_settings_say_what_to_do():
    with pytest.raises(ConfigError, match="tile_stride must be between 1 and tile_size"):
        ConsistentSelfAttention(tile_size=4, tile_stride=5)
    with pytest.raises(ConfigError, match=r"sampling_rate must be in \[0, 1\]"):
        ConsistentSelfAttention(sampling_rate=1.5)
    with pytest.raises(ConfigError, match="blocks must be a non-empty list"):
        ConsistentSelfAttention(blocks=["middle"])
    assert ConsistentSelfAttention(tile_size=8).tile_stride == 4
    assert ConsistentSelfAttention(tile_size=1).tile_stride == 1


def test_layer_selection(tiny_components):
    unet = tiny_components.unet
    up = ConsistentSelfAttention(blocks=["up"]).layer_names(unet)
    everything = ConsistentSelfAttention(blocks=["down", "mid", "up"]).layer_names(unet)
    assert up and all(n.startswith("up_blocks.") and n.endswith(".attn1") for n in up)
    assert everything == attention_layer_names(unet, "attn1")


# ------------------------------------------------------------------------------------ identities


def test_rate_zero_equals_attnprocessor2_0(tiny_components):
    unet = tiny_components.unet
    num_frames = 3
    reference = _unet_run(unet, num_frames)
    spec = ConsistentSelfAttention(
        sampling_rate=0.0, tile_size=2, tile_stride=1, blocks=["down", "mid", "up"]
    )
    state = _state(num_frames)
    with attention_processors(unet, spec.processors(unet, state, seed=0)):
        assert sum(isinstance(p, ConsistentSelfAttnProcessor) for p in unet.attn_processors.values()) == len(
            attention_layer_names(unet, "attn1")
        )
        torch.testing.assert_close(_unet_run(unet, num_frames), reference, rtol=1e-5, atol=1e-5)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


def test_rate_one_single_tile_is_extended_attention(tiny_components):
    attn = _layer(tiny_components.unet)
    num_frames = 3
    x = torch.randn(2 * num_frames, 16, attn.to_q.in_features, generator=torch.Generator().manual_seed(1))
    proc = ConsistentSelfAttnProcessor(
        _state(num_frames), LAYER, sampling_rate=1.0, tile_size=8, tile_stride=4
    )
    expected = _extended_reference(attn, x, [[0, 1, 2]], num_frames)
    torch.testing.assert_close(proc(attn, x), expected, rtol=1e-5, atol=1e-5)
    # and it is not per-frame attention
    assert not torch.allclose(AttnProcessor2_0()(attn, x), expected, atol=1e-3)


def test_overlapping_tiles_average_their_outputs(tiny_components):
    attn = _layer(tiny_components.unet)
    num_frames = 4
    x = torch.randn(2 * num_frames, 16, attn.to_q.in_features, generator=torch.Generator().manual_seed(2))
    proc = ConsistentSelfAttnProcessor(
        _state(num_frames), LAYER, sampling_rate=1.0, tile_size=2, tile_stride=1
    )
    tiles = [[0, 1], [1, 2], [2, 3]]
    torch.testing.assert_close(
        proc(attn, x), _extended_reference(attn, x, tiles, num_frames), rtol=1e-5, atol=1e-5
    )


def _sampled_reference(attn, x, num_frames, rate, size, stride, seed, layer, state):
    """Consistent attention written out: per tile, the picks re-drawn from the tile's seed, a softmax over
    the concatenated K/V of the whole tile with the unpicked tokens of the *other* frames masked out,
    averaged over a frame's tiles (per branch), then the output projection. ``x (B, N, C)``."""
    b, n, _ = x.shape
    heads = attn.heads

    def split(t):
        return t.view(b, n, heads, -1).transpose(1, 2)  # (B, heads, N, d)

    q, k, v = split(attn.to_q(x)), split(attn.to_k(x)), split(attn.to_v(x))
    out = torch.zeros_like(q)
    starts = tile_starts(num_frames, size, stride)
    tiles = [list(range(s0, min(s0 + size, num_frames))) for s0 in starts]
    picks = {
        s0: sample_token_indices(
            len(tile),
            n,
            rate,
            torch.Generator().manual_seed(tile_seed(seed, layer, state.phase, state.step_index, s0)),
        )
        for s0, tile in zip(starts, tiles)
    }
    for branch in range(b // num_frames):
        base = branch * num_frames
        for f in range(num_frames):
            mine = [(s0, tile) for s0, tile in zip(starts, tiles) if f in tile]
            for s0, tile in mine:
                keys = torch.cat([k[base + j] for j in tile], dim=1)  # (heads, T*N, d)
                values = torch.cat([v[base + j] for j in tile], dim=1)
                visible = torch.zeros(len(tile), n, dtype=torch.bool)
                for pos, j in enumerate(tile):
                    if j == f:
                        visible[pos] = True
                    else:
                        visible[pos, picks[s0][pos]] = True
                scores = q[base + f] @ keys.transpose(-1, -2) * attn.scale
                w = torch.softmax(scores.masked_fill(~visible.flatten(), float("-inf")), dim=-1)
                out[base + f] += (w @ values) / len(mine)
    out = out.transpose(1, 2).reshape(b, n, heads * q.shape[-1])
    return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize(("num_frames", "size", "stride"), [(3, 8, 4), (5, 3, 1), (6, 4, 2)])
def test_partial_sampling_equals_the_masked_reference(tiny_components, num_frames, size, stride):
    attn = _layer(tiny_components.unet)
    x = torch.randn(2 * num_frames, 16, attn.to_q.in_features, generator=torch.Generator().manual_seed(4))
    state = _state(num_frames, step=2)
    proc = ConsistentSelfAttnProcessor(
        state, LAYER, sampling_rate=0.4, tile_size=size, tile_stride=stride, seed=5
    )
    expected = _sampled_reference(attn, x, num_frames, 0.4, size, stride, 5, LAYER, state)
    torch.testing.assert_close(proc(attn, x), expected, rtol=1e-5, atol=1e-5)
    # neither per-frame attention nor full extended attention over the tiles
    assert not torch.allclose(proc(attn, x), AttnProcessor2_0()(attn, x), atol=1e-4)
    full = ConsistentSelfAttnProcessor(state, LAYER, sampling_rate=1.0, tile_size=size, tile_stride=stride)
    assert not torch.allclose(proc(attn, x), full(attn, x), atol=1e-4)


def test_keys_are_own_tokens_plus_a_share_of_the_tile_and_bounded_by_it():
    """Each query frame sees its N tokens plus ~rate of every other tile frame's; never more than T*N,
    whatever the clip length (the attention's memory is bounded by the tile)."""
    heads, n, d, size = 2, 64, 4, 4
    for num_frames in (4, 16):
        proc = ConsistentSelfAttnProcessor(
            _state(num_frames, ("cond",)), LAYER, sampling_rate=0.5, tile_size=size, tile_stride=2
        )
        lengths = []
        proc._sdpa = _recording_sdpa(proc._sdpa, lengths)
        qkv = torch.randn(3, num_frames, heads, n, d)
        call = AttentionCall(hidden_states=qkv[0], is_cross=False)
        proc.attend(_FakeAttn(d), *qkv, call)
        num_tiles = len(tile_starts(num_frames, size, 2))
        assert len(lengths) == num_tiles * size
        assert max(lengths) <= size * n
        shared = [(length - n) / ((size - 1) * n) for length in lengths]
        assert 0.35 < sum(shared) / len(shared) < 0.65  # Bernoulli(0.5) share of the other frames


def _recording_sdpa(sdpa, lengths: list[int]):
    def record(q, k, v, scale):
        lengths.append(k.shape[2])
        return sdpa(q, k, v, scale)

    return record


class _FakeAttn:
    def __init__(self, dim: int) -> None:
        self.scale = dim**-0.5


# ------------------------------------------------------------------------------------ randomness


def test_draws_are_reproducible_and_independent_of_call_order(tiny_components):
    attn = _layer(tiny_components.unet)
    num_frames = 4
    x = torch.randn(2 * num_frames, 16, attn.to_q.in_features, generator=torch.Generator().manual_seed(3))
    state = _state(num_frames, step=2)

    def proc(seed, layer=LAYER):
        return ConsistentSelfAttnProcessor(
            state, layer, sampling_rate=0.5, tile_size=3, tile_stride=1, seed=seed
        )

    rng = torch.get_rng_state()
    first = proc(7)(attn, x)
    proc(7, "another.layer")(attn, x)  # another layer's call in between changes nothing
    torch.testing.assert_close(proc(7)(attn, x), first, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched
    assert not torch.allclose(proc(8)(attn, x), first)  # another seed, other draws
    state.update(step_index=3)
    assert not torch.allclose(proc(7)(attn, x), first)  # another step, other draws


def test_start_step_and_a_stale_state():
    q = torch.randn(2 * 3, 2, 8, 4)
    call = AttentionCall(hidden_states=q, is_cross=False)
    state = _state(3, step=0)
    proc = ConsistentSelfAttnProcessor(
        state, LAYER, sampling_rate=1.0, tile_size=3, tile_stride=3, start_step=1
    )
    plain = torch.nn.functional.scaled_dot_product_attention(q, q, q, scale=0.5)
    torch.testing.assert_close(proc.attend(_FakeAttn(4), q, q, q, call), plain)
    state.update(step_index=1)
    assert not torch.allclose(proc.attend(_FakeAttn(4), q, q, q, call), plain)
    state.update(num_frames=4)
    with pytest.raises(ValueError, match="must update the StepState"):
        proc.attend(_FakeAttn(4), q, q, q, call)


# ------------------------------------------------------------------------------------ ddim


@pytest.fixture(scope="module")
def ddim_setup(tiny_components):
    from videoedit.data.synthetic import TwoFiguresClip

    source = TwoFiguresClip(num_frames=3, height=64, width=64).load()
    pipe = DDIMEditPipeline.from_components(tiny_components)
    pipe.set_progress_bar_config(disable=True)
    control = source.conditions["openpose"]
    inversion = pipe.invert(source.frames, source.prompt, control, num_inference_steps=2)
    return pipe, source, control, inversion


def _ddim_edit(ddim_setup, method, seed=0):
    pipe, source, control, inversion = ddim_setup
    request = EditRequest(0, "two astronauts", seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return method.edit(pipe, source, inversion, request, control, 1.0, generator).frames


def test_ddim_with_rate_zero_is_the_baseline_and_restores_processors(ddim_setup):
    baseline = _ddim_edit(ddim_setup, DDIMMethod(num_inference_steps=2))
    spec = {"sampling_rate": 0.0, "tile_size": 2, "tile_stride": 1, "blocks": ["down", "mid", "up"]}
    method = DDIMMethod(num_inference_steps=2, self_attention=spec)
    torch.testing.assert_close(_ddim_edit(ddim_setup, method), baseline, rtol=1e-4, atol=1e-4)
    assert all(isinstance(p, AttnProcessor2_0) for p in ddim_setup[0].unet.attn_processors.values())
    assert method.describe()["self_attention"]["tile_stride"] == 1


def test_ddim_with_consistent_attention_follows_the_edit_seed(ddim_setup):
    method = DDIMMethod(num_inference_steps=2, self_attention=ConsistentSelfAttention(0.5, tile_size=2))
    baseline = _ddim_edit(ddim_setup, DDIMMethod(num_inference_steps=2))
    first = _ddim_edit(ddim_setup, method, seed=0)
    assert not torch.allclose(first, baseline, atol=1e-4)
    torch.testing.assert_close(_ddim_edit(ddim_setup, method, seed=0), first, rtol=0, atol=0)
    assert not torch.allclose(_ddim_edit(ddim_setup, method, seed=1), first)


def test_ddim_self_attention_settings_errors():
    with pytest.raises(ConfigError, match=r"Bad method\.self_attention settings .*'rate'"):
        DDIMMethod(self_attention={"rate": 0.5})
    # consistent attention during a batched inversion would cut the tiles at the batch boundaries
    with pytest.raises(ConfigError, match=r"set method\.inversion\.frame_batch_size=null \(got 2\)"):
        DDIMMethod(self_attention={"during_inversion": True}, inversion={"frame_batch_size": 2})
    assert DDIMMethod(self_attention={"during_inversion": False}, inversion={"frame_batch_size": 2})
    assert DDIMMethod(self_attention={"during_inversion": True}).self_attention.during_inversion


def test_inversion_signature_only_when_used_during_inversion():
    assert DDIMMethod().inversion_signature() == {}
    assert DDIMMethod(self_attention=ConsistentSelfAttention()).inversion_signature() == {}
    sig = DDIMMethod(self_attention=ConsistentSelfAttention(during_inversion=True)).inversion_signature()
    assert sig["self_attention"]["name"] == "consistent"


def test_consistent_two_figures_experiment_writes_the_result_tree(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    overrides = [o for o in FAST if not o.startswith(("data.height", "data.width", "method.num_inference"))]
    cfg = compose(
        "+experiment=consistent_two_figures",
        *overrides,
        "data.height=64",
        "data.width=64",
        "data.num_frames=5",
        "method.num_inference_steps=2",
        "method.self_attention.tile_size=2",
        "method.self_attention.during_inversion=true",
    )
    result = edit(cfg, tmp_path / "run")
    root = tmp_path / "run"
    for rel in ("sample/edit0_seed0.mp4", "sample/edit0_seed0/00004.png", "metrics.json", "COMPLETE"):
        assert (root / rel).is_file(), rel
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["method"]["self_attention"] == {
        "name": "consistent",
        "sampling_rate": 0.5,
        "tile_size": 2,
        "tile_stride": 1,
        "blocks": ["up"],
        "start_step": 0,
        "during_inversion": True,
    }
    assert result.edits["edit0_seed0"].shape == (5, 64, 64, 3)
