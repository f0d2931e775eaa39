import torch

from videoedit.layout.regions import build_layer_layouts, downsample_regions


def _random_masks(frames=3, regions=3, size=32, seed=0, overlap=True):
    g = torch.Generator().manual_seed(seed)
    blobs = torch.nn.functional.interpolate(
        torch.rand(frames, regions, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear"
    )
    masks = blobs > 0.55
    if not overlap:
        owner = blobs.argmax(1)
        masks = torch.stack([owner == r for r in range(regions)], 1) & (blobs.amax(1, keepdim=True) > 0.4)
    return masks


def _reference(level):
    """The official construction with full matrices: L (F, R, h, w) -> sreg, reg_sizes, reg_sizes_c."""
    f, r, h, w = level.shape
    ls = level.permute(1, 0, 2, 3).reshape(r, f * h * w).double()  # (R, F*hw)
    sreg = sum(ls[s][:, None] * ls[s][None, :] for s in range(r))  # (F*hw, F*hw) counts
    reg_sizes = 1 - sreg.sum(-1) / ((h * f) * (w * f))
    per_frame = []
    for fr in range(f):
        lf = level[fr].reshape(r, h * w).double()
        cnt = sum(lf[s][:, None] * lf[s][None, :] for s in range(r)).sum(-1)
        per_frame.append(1 - cnt / (h * w))
    return sreg > 0, reg_sizes, torch.stack(per_frame)


def test_layouts_match_the_official_formulas():
    masks = _random_masks()
    token_region = torch.full((77,), -1)
    token_region[1:3] = 0
    token_region[5] = 2
    layouts = build_layer_layouts(masks, (16, 16), token_region, factors=(1, 2, 4))
    for factor, layout in layouts.items():
        size = 16 // factor
        # independent of the implementation: nearest to latent size, then nearest to the level (official)
        latent = torch.nn.functional.interpolate(masks.float(), size=(16, 16), mode="nearest")
        level = torch.nn.functional.interpolate(latent, size=(size, size), mode="nearest") > 0.5
        assert layout.grid == (size, size)
        pair, reg_sizes, reg_sizes_c = _reference(level.float())
        member = layout.flat_member()
        torch.testing.assert_close((member @ member.T) > 0, pair)
        torch.testing.assert_close(layout.self_size(member, member, 3).double(), reg_sizes)
        torch.testing.assert_close(layout.cross_size.double(), reg_sizes_c.double())
        # cross ownership: token 1 (region 0) follows region 0's mask, token 5 region 2's, token 4 none
        flat = level.flatten(2)  # (F, R, N)
        assert torch.equal(layout.cross_mask[:, :, 1], flat[:, 0])
        assert torch.equal(layout.cross_mask[:, :, 5], flat[:, 2])
        assert not layout.cross_mask[:, :, 4].any()


def test_overlaps_are_counted():
    masks = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    masks[0, 0, :, :6] = True
    masks[0, 1, :, 4:] = True  # columns 4-5 in both regions
    layout = build_layer_layouts(masks, (8, 8), torch.full((77,), -1), factors=(1,))[1]
    m = layout.flat_member()
    # a token in both regions pairs with every token of either: count = 48 + 32
    both = 0 * 8 + 4
    torch.testing.assert_close(layout.self_size(m[both : both + 1], m, 1), torch.tensor([1 - (48 + 32) / 64]))


def test_max_and_area_pooling_keep_thin_parts():
    masks = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    masks[0, 0, 33:36, 10:50] = True  # a 3-px-high stripe ("sunglasses") between the sampled rows
    nearest = downsample_regions(masks, (8, 8), "nearest")
    assert not nearest.any()  # the official nearest downsampling loses it at 8x8
    assert downsample_regions(masks, (8, 8), "max").any()
    assert downsample_regions(masks, (8, 8), "area", area_threshold=0.25).any()
    assert not downsample_regions(masks, (8, 8), "area", area_threshold=0.5).any()
