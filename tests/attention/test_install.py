import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from videoedit.attention.base import AttentionProcessorBase, frames_to_sequence, sequence_to_frames
from videoedit.attention.install import attention_layer_names, attention_processors, module_hooks
from videoedit.attention.state import StepState


def _run(unet):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    return unet(x, 10, text).sample


def test_base_processor_equals_attnprocessor2_0(tiny_components):
    unet = tiny_components.unet
    ref = _run(unet)
    with attention_processors(unet, lambda name: AttentionProcessorBase()):
        assert all(isinstance(p, AttentionProcessorBase) for p in unet.attn_processors.values())
        torch.testing.assert_close(_run(unet), ref, rtol=1e-5, atol=1e-5)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


def test_restored_after_an_exception(tiny_components):
    unet = tiny_components.unet
    before = dict(unet.attn_processors)
    name = attention_layer_names(unet, "attn1")[0]
    with pytest.raises(RuntimeError), attention_processors(unet, {name: AttentionProcessorBase()}):
        assert isinstance(unet.attn_processors[f"{name}.processor"], AttentionProcessorBase)
        raise RuntimeError("boom")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}
    with (
        pytest.raises(KeyError, match="no attention layer named"),
        attention_processors(unet, {"nope.attn1": AttentionProcessorBase()}),
    ):
        pass


def test_hooks_are_removed(tiny_components):
    unet = tiny_components.unet
    seen = []
    with (
        pytest.raises(RuntimeError),
        module_hooks(unet, {"up_blocks.1.resnets.1.conv2": lambda m, a, o: seen.append(o.shape)}),
    ):
        _run(unet)
        raise RuntimeError("boom")
    assert seen
    count = len(seen)
    _run(unet)
    assert len(seen) == count
    assert not any(m._forward_hooks for m in unet.modules())


def test_sequence_helpers_and_state():
    x = torch.randn(2 * 3, 4, 5, 8)  # (G*F, heads, N, d) with G=2, F=3
    seq = frames_to_sequence(x, 3)
    assert seq.shape == (2, 4, 15, 8)
    torch.testing.assert_close(seq[1, :, 5:10], x[4])  # group 1, frame 1
    torch.testing.assert_close(sequence_to_frames(seq, 3), x)
    state = StepState(num_frames=4, branches=("uncond", "cond"), latent_size=(32, 48))
    assert state.branch_slice("cond") == slice(4, 8)
    assert state.token_grid(32 * 48 // 4) == (16, 24) and state.downsample_factor(24) == 8
    with pytest.raises(AttributeError):
        state.update(nope=1)
