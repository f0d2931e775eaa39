import torch

from videoedit.attention.install import attention_layer_names
from videoedit.models.tiny import build_tiny_components


def test_same_seed_same_weights():
    a = build_tiny_components(seed=3, controlnet=None)
    b = build_tiny_components(seed=3, controlnet=None)
    c = build_tiny_components(seed=4, controlnet=None)
    pa, pb, pc = (next(iter(m.unet.parameters())) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.controlnet is None


def test_has_sd15_topology(tiny_components):
    unet = tiny_components.unet
    modules = dict(unet.named_modules())
    for name in (
        "up_blocks.1.resnets.1",
        "up_blocks.2.resnets.0",
        "up_blocks.3.attentions.2.transformer_blocks.0.attn1",
    ):
        assert name in modules
    assert len(attention_layer_names(unet, "attn1")) == 16  # as SD-1.5
    assert len(attention_layer_names(unet, "attn2")) == 16
    assert tiny_components.shape_rule().size_multiple == 64


def test_controlnet_condition_changes_the_output(tiny_components):
    c = tiny_components
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    outs = []
    for seed in (0, 1):
        cond = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(seed))
        down, mid = c.controlnet(x, 10, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
        outs.append(
            c.unet(
                x, 10, text, down_block_additional_residuals=down, mid_block_additional_residual=mid
            ).sample
        )
    assert (outs[0] - outs[1]).abs().mean() > 0.02 * outs[0].abs().mean()
