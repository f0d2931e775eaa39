import torch

from videoedit.models.freeu import FreeUSettings, freeu


def test_freeu_changes_the_unet_only_inside_the_block(tiny_components):
    unet = tiny_components.unet
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    before = unet(x, 10, text).sample
    with freeu(unet, FreeUSettings()):
        inside = unet(x, 10, text).sample
    after = unet(x, 10, text).sample
    assert (inside - before).abs().max() > 1e-4
    torch.testing.assert_close(after, before)
    with freeu(unet, None):
        torch.testing.assert_close(unet(x, 10, text).sample, before)
