"""PSNR/SSIM outside the edited regions: which regions count, known answers, skimage as the SSIM reference."""

import math

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
