"""PSNR/SSIM outside the edited regions: which regions count, known answers, skimage as the SSIM reference."""

import math
from pathlib import Path

import numpy as np
import pytest

from videoedit.metrics.preservation import (
    edited_regions,
    masked_psnr,
    masked_ssim,
    preservation,
    preserved_mask,
)

REGIONS = ["left_man", "right_man", "trees"]


def _clip(seed: int = 0, frames: int = 2, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


def _masks(frames: int = 2, h: int = 40, w: int = 48) -> np.ndarray:
    """(F, 3, H, W): left quarter, right quarter, the rest."""
    m = np.zeros((frames, 3, h, w), dtype=bool)
    m[:, 0, :, : w // 4] = True
    m[:, 1, :, -w // 4 :] = True
    m[:, 2] = ~(m[:, 0] | m[:, 1])
    return m


def test_which_regions_are_edited():
    assert edited_regions(REGIONS, ()) == REGIONS  # a plain prompt: every region
    assert edited_regions(REGIONS, ("Spiderman", "Polar Bear", "cherry trees")) == REGIONS
    assert edited_regions(REGIONS, ("Spiderman", "", "cherry trees")) == ["left_man", "trees"]
    assert edited_regions(REGIONS, ("Spiderman",)) == ["left_man"]  # no local prompt: kept
    keep = preserved_mask(_masks(), REGIONS, ["left_man", "right_man"])
    assert keep.shape == (2, 40, 48) and keep[:, :, 12:36].all() and not keep[:, :, :12].any()


def test_identical_frames_give_the_capped_psnr_and_ssim_one():
    a = _clip()
    assert masked_psnr(a, a) == (100.0, [100.0, 100.0])
    assert masked_psnr(a, a, max_psnr=60.0)[0] == 60.0
    assert masked_ssim(a, a)[0] == pytest.approx(1.0)


def test_psnr_matches_its_formula():
    a = _clip()
    b = np.clip(a.astype(int) + np.random.default_rng(1).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    mean, per_frame = masked_psnr(a, b)
    expected = [10 * math.log10(255**2 / ((a[f].astype(float) - b[f]) ** 2).mean()) for f in range(2)]
    assert per_frame == pytest.approx(expected)
    assert mean == pytest.approx(np.mean(expected))


def test_masked_psnr_and_ssim_ignore_the_edited_regions():
    a = _clip()
    b = a.copy()
    masks = _masks()
    b[:, :, :12] = 255 - b[:, :, :12]  # change only the left region
    result = preservation(a, b, masks, REGIONS, ("Spiderman", "", ""))
    assert result["edited_regions"] == ["left_man"]
    assert result["psnr_preserved"] == 100.0
    assert result["ssim_preserved"] == pytest.approx(1.0)
    assert result["preserved_fraction"] == pytest.approx(0.75)
    # the same change counts when its region is not edited
    other = preservation(a, b, masks, REGIONS, ("", "Polar Bear", ""))
    assert other["psnr_preserved"] < 20 and other["ssim_preserved"] < 0.9
    # unmasked scores see the change
    assert masked_psnr(a, b)[0] < 20


def test_ssim_equals_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a = _clip(3)
    b = np.clip(a.astype(int) + np.random.default_rng(4).integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    ours = masked_ssim(a, b)[1]
    reference = [
        skimage_metrics.structural_similarity(
            a[f],
            b[f],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
        )
        for f in range(2)
    ]
    assert ours == pytest.approx(reference, abs=1e-5)


def test_ssim_windows_touching_an_edited_pixel_are_left_out():
    a = _clip()
    b = a.copy()
    b[:, 20, 30] = 255 - b[:, 20, 30]  # one changed pixel
    keep = np.ones((2, 40, 48), dtype=bool)
    keep[:, 20, 30] = False  # ... inside an edited region
    assert masked_ssim(a, b, keep)[0] == pytest.approx(1.0)
    assert masked_ssim(a, b)[0] < 1.0


def test_nothing_preserved_is_skipped_with_the_reason():
    a = _clip()
    assert preservation(a, a, None, REGIONS)["skipped"].startswith("no region masks")
    covered = preservation(a, a, _masks(), REGIONS, ())
    assert "cover every pixel" in covered["skipped"]
    thin = np.zeros((2, 3, 40, 48), dtype=bool)
    thin[:, 0] = True
    thin[:, 0, :, 20:23] = False  # a 3-px strip is preserved: PSNR yes, no whole SSIM window
    strip = preservation(a, a, thin, REGIONS, ("x",))
    assert strip["psnr_preserved"] == 100.0 and strip["ssim_preserved"] is None
    assert "window" in strip["ssim_skipped"]


# ------------------------------------------------------------------------------------------ LPIPS


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A random AlexNet backbone saved as a torchvision state dict (``features.*``), as LPIPS reads it."""
    import torch
    import torchvision

    torch.manual_seed(0)
    state = {
        k: v
        for k, v in torchvision.models.alexnet(weights=None).state_dict().items()
        if k.startswith("features.")
    }
    path = tmp_path_factory.mktemp("lpips") / "alexnet.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def lpips(alexnet_file):
    from videoedit.metrics.preservation import LPIPS

    return LPIPS("alex", str(alexnet_file))


def _direct_lpips(a: np.ndarray, b: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray]:
    """LPIPS v0.1 (alex) written out: scaled inputs, AlexNet relu1..relu5, unit-normalised channels,
    squared difference, the learned 1x1 weights (torchmetrics' alex.pth), then (spatial) the bilinear
    upsampling to the frame, or (whole image) the spatial mean; summed over layers."""
    import inspect

    import torch
    import torch.nn.functional as F
    import torchvision
    from torchmetrics.functional.image import lpips as tm_lpips

    net = torchvision.models.alexnet(weights=None).features
    net.load_state_dict({k.split(".", 1)[1]: v for k, v in torch.load(weights, weights_only=True).items()})
    lins = torch.load(
        Path(inspect.getfile(tm_lpips)).parent / "lpips_models" / "alex.pth",
        map_location="cpu",
        weights_only=True,
    )
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def feats(x: np.ndarray) -> list:
        t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1 - shift) / scale
        out = []
        for i, layer in enumerate(net[:12]):
            t = layer(t)
            if i in (1, 4, 7, 9, 11):
                out.append(t / torch.sqrt(1e-8 + (t**2).sum(1, keepdim=True)))
        return out

    with torch.no_grad():
        fa, fb = feats(a), feats(b)
        spatial, whole = 0, 0
        for k, (x, y) in enumerate(zip(fa, fb)):
            d = F.conv2d((x - y) ** 2, lins[f"lin{k}.model.1.weight"])
            spatial = spatial + F.interpolate(d, size=a.shape[1:3], mode="bilinear", align_corners=False)
            whole = whole + d.mean((2, 3))
    return spatial[:, 0].numpy(), whole[:, 0].numpy()


def test_masked_lpips_matches_the_lpips_formula(alexnet_file, lpips):
    from videoedit.metrics.preservation import masked_lpips

    a = _clip(5, h=64, w=64)
    b = np.clip(a.astype(int) + np.random.default_rng(6).integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    spatial, whole = _direct_lpips(a, b, alexnet_file)
    keep = np.zeros((2, 64, 64), dtype=bool)
    keep[:, 10:50, 5:40] = True
    mean, per_frame = masked_lpips(a, b, lpips, keep)
    expected = [spatial[f][keep[f]].mean() for f in range(2)]
    assert per_frame == pytest.approx(expected, rel=1e-4)
    assert mean == pytest.approx(np.mean(expected), rel=1e-4)
    assert lpips.distance(a, b).numpy() == pytest.approx(whole, rel=1e-4)
    assert masked_lpips(a, a, lpips)[0] == pytest.approx(0.0, abs=1e-7)
    assert lpips.settings() == {"net": "alex", "weights": str(alexnet_file), "backend": "torchmetrics"}
    # an edited region outside `keep` does not count
    c = a.copy()
    c[:, :, 45:] = 255 - c[:, :, 45:]
    far = np.zeros_like(keep)
    far[:, :, :20] = True
    assert masked_lpips(a, c, lpips, far)[0] < 0.5 * masked_lpips(a, c, lpips)[0]


def test_lpips_without_backbone_weights_says_where_to_put_them(tmp_path, monkeypatch):
    import torch

    from videoedit.metrics.preservation import LPIPS

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"the LPIPS alex backbone weights were not found") as info:
        LPIPS("alex")
    assert "alexnet-owt-7be5be79.pth" in str(info.value) and "metrics.lpips_weights=<file>" in str(info.value)


def _torchmetrics_ssim_formula(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM as torchmetrics (and so FiVE) computes it, written out: reflect-pad by 5 (no edge repeat), 11x11
    Gaussian (sigma 1.5) local statistics, C1 = 0.01^2, C2 = 0.03^2 (data range 1), variances clamped at 0,
    mean over every pixel and channel (no border crop, unlike scikit-image)."""
    from scipy.signal import convolve2d

    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    kernel = np.outer(g / g.sum(), g / g.sum())
    values = []
    for c in range(3):
        a, b = (np.pad(v[..., c], 5, mode="reflect") for v in (x, y))
        mu_a, mu_b = convolve2d(a, kernel, "valid"), convolve2d(b, kernel, "valid")
        var_a = np.maximum(convolve2d(a * a, kernel, "valid") - mu_a**2, 0)
        var_b = np.maximum(convolve2d(b * b, kernel, "valid") - mu_b**2, 0)
        cov = convolve2d(a * b, kernel, "valid") - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        values.append(
            ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        )
    return float(np.mean(values))


def test_the_pie_bench_protocol_zeroes_the_edited_regions(alexnet_file, lpips):
    a = _clip(7, h=48, w=48)
    b = np.clip(a.astype(int) + np.random.default_rng(8).integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    masks = _masks(h=48, w=48)
    result = preservation(a, b, masks, REGIONS, ("Spiderman", "", ""), lpips=lpips, protocol="pie_bench")
    keep = ~masks[:, 0]
    ma, mb = a * keep[..., None], b * keep[..., None]  # edited region set to 0 in both
    mse = [((ma[f] / 255.0 - mb[f] / 255.0) ** 2).mean() for f in range(2)]
    assert result["psnr_preserved"] == pytest.approx(np.mean([10 * math.log10(1 / m) for m in mse]), rel=1e-4)
    ssim = [_torchmetrics_ssim_formula(ma[f] / 255.0, mb[f] / 255.0) for f in range(2)]
    assert result["ssim_preserved"] == pytest.approx(np.mean(ssim), abs=1e-4)
    assert result["lpips_preserved"] == pytest.approx(_direct_lpips(ma, mb, alexnet_file)[1].mean(), rel=1e-4)
    outside = preservation(a, b, masks, REGIONS, ("Spiderman", "", ""), lpips=lpips)
    assert outside["psnr_preserved"] < result["psnr_preserved"]  # zeroed pixels are "perfectly" kept
    with pytest.raises(ValueError, match="background protocol must be one of outside, pie_bench"):
        preservation(a, b, masks, REGIONS, protocol="fiVe")
