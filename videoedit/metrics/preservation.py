"""Preservation outside the edited regions: PSNR, SSIM and LPIPS between source and output.

Which regions count as **edited**:

* when the edit has local prompts (``[full, local_1, ..., local_n]``, local prompt ``i`` <-> region
  ``i`` as in VideoGrain), the regions whose local prompt is non-empty; regions with an empty local
  prompt (``''``) or without one (more masks than local prompts) are meant to be kept;
* otherwise (a plain prompt), every region.

The **preserved** pixels are those no edited region covers. Without masks, or when the edited regions
cover every pixel, nothing is known to be preserved and the metric is skipped (with the reason).

Two protocols (``metrics.background_protocol``; definitions in ``videoedit.metrics.definitions``):

* ``outside`` (default): each metric on the preserved pixels only.
  PSNR: per frame ``10 log10(255^2 / MSE)`` over the preserved pixels and 3 channels (scikit-image's
  ``peak_signal_noise_ratio`` on those pixels); identical pixels give ``max_psnr``; mean over frames.
  SSIM: scikit-image's SSIM map (Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03, per channel then
  averaged) averaged over the window centres whose **whole window** is preserved and inside the frame,
  so no edited pixel leaks in (``None`` with the reason when there is no such centre).
  LPIPS: the LPIPS v0.1 spatial map (torchmetrics' network, upsampled to the frame) averaged over the
  preserved pixels, mean over frames.
* ``pie_bench`` (PIE-Bench, as FiVE-Bench evaluates background preservation): both frames multiplied
  by the preserved-pixel mask (edited regions set to 0), then whole-image PSNR / SSIM (data range 1) and
  LPIPS with torchmetrics, mean over frames.

Frames are ``(F, H, W, 3)`` uint8; masks ``(F, R, H, W)`` bool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # skimage: int(truncate=3.5 * sigma + 0.5) -> an 11x11 window
PROTOCOLS = ("outside", "pie_bench")
LPIPS_NETS = ("alex", "vgg", "squeeze")
# torchvision weights of each LPIPS backbone (what torchmetrics downloads with pretrained=True)
_TV_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def edited_regions(regions: Sequence[str], local_prompts: Sequence[str] = ()) -> list[str]:
    """The regions an edit changes: with local prompts, those whose prompt is non-empty; else all."""
    if not local_prompts:
        return list(regions)
    return [r for r, p in zip(regions, local_prompts) if p is not None and str(p).strip()]


def preserved_mask(masks: np.ndarray, regions: Sequence[str], edited: Sequence[str]) -> np.ndarray:
    """``(F, H, W)`` bool: pixels covered by none of the ``edited`` regions (``masks (F, R, H, W)``)."""
    index = [list(regions).index(r) for r in edited]
    if not index:
        return np.ones((masks.shape[0], *masks.shape[2:]), dtype=bool)
    return ~np.asarray(masks)[:, index].any(axis=1)


def _check_pair(source: np.ndarray, output: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Checks shapes; returns ``keep (F, H, W)`` bool (all true when ``None``)."""
    source, output = np.asarray(source), np.asarray(output)
    if source.ndim != 4 or source.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got {source.shape}")
    if source.shape != output.shape:
        raise ValueError(f"source {tuple(source.shape)} and output {tuple(output.shape)} differ in shape")
    if keep is None:
        return np.ones(source.shape[:3], dtype=bool)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != source.shape[:3]:
        raise ValueError(f"mask {keep.shape} does not match frames {tuple(source.shape)}")
    return keep


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def masked_psnr(
    source: np.ndarray, output: np.ndarray, keep: np.ndarray | None = None, max_psnr: float = 100.0
) -> tuple[float | None, list[float | None]]:
    """PSNR (dB, 8-bit peak) over the ``keep (F, H, W)`` pixels: ``(clip mean, per frame)``.

    Per frame: scikit-image's ``peak_signal_noise_ratio`` of the kept pixels (all 3 channels). Identical
    pixels give ``max_psnr``; frames without kept pixels give ``None`` and are left out of the mean.
    """
    from skimage.metrics import peak_signal_noise_ratio

    keep = _check_pair(source, output, keep)
    per_frame: list[float | None] = []
    for a, b, k in zip(np.asarray(source), np.asarray(output), keep):
        if not k.any():
            per_frame.append(None)
            continue
        with np.errstate(divide="ignore"):  # identical pixels: inf, reported as max_psnr
            value = float(peak_signal_noise_ratio(a[k], b[k], data_range=255))
        per_frame.append(min(max_psnr, value))
    return _mean(per_frame), per_frame


def ssim_map(source: np.ndarray, output: np.ndarray) -> torch.Tensor:
    """SSIM at every window centre whose window lies inside the frame: ``(F, H-10, W-10)``, channel mean.

    scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1, full=True)`` map, in float64; only
    centres whose window is inside the frame are kept, so the filter's border handling never matters.
    """
    from skimage.metrics import structural_similarity

    _check_pair(source, output, None)
    n, h, w, _ = np.shape(source)
    r = SSIM_RADIUS
    if min(h, w) <= 2 * r:
        raise ValueError(f"frames of {h}x{w} are too small for an 11x11 SSIM window")
    out = np.empty((n, h - 2 * r, w - 2 * r), dtype=np.float64)
    for f in range(n):
        _, full = structural_similarity(
            source[f],
            output[f],
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
            full=True,
        )
        out[f] = full.mean(axis=-1)[r:-r, r:-r]
    return torch.from_numpy(out)


def masked_ssim(
    source: np.ndarray, output: np.ndarray, keep: np.ndarray | None = None
) -> tuple[float | None, list[float | None]]:
    """SSIM averaged over window centres whose whole window is in ``keep (F, H, W)``: ``(mean, per frame)``.

    With ``keep=None`` this is the mean of scikit-image's SSIM map over the centres whose window is inside
    the frame. The clip value pools all counted centres of all frames.
    """
    keep = _check_pair(source, output, keep)
    s = ssim_map(source, output)  # (F, H-10, W-10)
    k = torch.from_numpy(keep)[:, None].double()  # (F, 1, H, W)
    # a centre counts when its whole window is kept: a min-pool of the mask over the window
    valid = -F.max_pool2d(-k, kernel_size=2 * SSIM_RADIUS + 1, stride=1)[:, 0]
    count = valid.sum((1, 2))
    per_frame = [
        float(v) if n > 0 else None for v, n in zip((s * valid).sum((1, 2)) / count.clamp_min(1), count)
    ]
    total = count.sum()
    return (float((s * valid).sum() / total) if total > 0 else None), per_frame


# ------------------------------------------------------------------------------------------ LPIPS


def lpips_backbone_path(net: str, weights: str | None = None) -> Path | None:
    """The torchvision ImageNet weights of an LPIPS backbone: ``weights`` if it is a file, else torch hub's
    cached download of torchvision's file (what ``torchvision.models.<net>(weights=DEFAULT)`` fetches)."""
    if weights and Path(weights).expanduser().is_file():
        return Path(weights).expanduser()
    import torchvision.models

    url = getattr(torchvision.models, _TV_WEIGHTS[net]).DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return cached if cached.is_file() else None


class LPIPS:
    """LPIPS v0.1 (Zhang et al. 2018) with torchmetrics' network: learned linear layers shipped in the
    torchmetrics wheel, the ImageNet backbone (``alex``, ``vgg`` or ``squeeze``) from a torchvision
    state dict on disk (never downloaded here).

    Args:
        net: the backbone.
        weights: a torchvision state dict of the backbone (``features.*`` keys suffice); ``None``: torch
            hub's cache.
        device: where to run.
        random_backbone: tests only: a random backbone instead of ImageNet weights (``weights`` ignored).
    """

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        weights: str | None = None,
        device: str | torch.device = "cpu",
        random_backbone: bool = False,
    ) -> None:
        from torchmetrics.functional.image.lpips import _LPIPS

        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS backbone must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
        path = None if random_backbone else lpips_backbone_path(net, weights)
        if path is None and not random_backbone:  # checked before building the network (seconds on a CPU)
            import torchvision.models

            url = getattr(torchvision.models, _TV_WEIGHTS[net]).DEFAULT.url
            raise FileNotFoundError(
                f"the LPIPS {net} backbone weights were not found ({weights or 'metrics.lpips_weights not set'}; "
                f"nor {Path(torch.hub.get_dir()) / 'checkpoints' / url.rsplit('/', 1)[-1]}): download "
                f"{url} into torch hub's checkpoints folder or set metrics.lpips_weights=<file>"
            )
        self.model = _LPIPS(pretrained=True, net=net, spatial=True, pnet_rand=True)
        self.net = net
        self.weights = "random" if path is None else str(path)
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            # torchmetrics' slices hold torchvision's `features` modules under their index: sliceK.<i>.* <-> features.<i>.*
            mapped = {
                name: state[f"features.{name.split('.', 1)[1]}"] for name in self.model.net.state_dict()
            }
            self.model.net.load_state_dict(mapped)
        self.model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)

    @staticmethod
    def _tensor(frames: np.ndarray) -> torch.Tensor:
        """``(F, H, W, 3)`` uint8 -> ``(F, 3, H, W)`` float32 in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1

    @torch.no_grad()
    def spatial(self, source: np.ndarray, output: np.ndarray, batch_size: int = 8) -> torch.Tensor:
        """The LPIPS map of each frame pair, upsampled to the frame: ``(F, H, W)``."""
        self.model.spatial = True
        maps = []
        for s in range(0, len(source), batch_size):
            a = self._tensor(source[s : s + batch_size]).to(self.device)
            b = self._tensor(output[s : s + batch_size]).to(self.device)
            maps.append(self.model(a, b)[:, 0].float().cpu())
        return torch.cat(maps)

    @torch.no_grad()
    def distance(self, source: np.ndarray, output: np.ndarray, batch_size: int = 8) -> torch.Tensor:
        """Whole-image LPIPS of each frame pair (the spatial average of each layer): ``(F,)``."""
        self.model.spatial = False
        values = []
        for s in range(0, len(source), batch_size):
            a = self._tensor(source[s : s + batch_size]).to(self.device)
            b = self._tensor(output[s : s + batch_size]).to(self.device)
            values.append(self.model(a, b).reshape(-1).float().cpu())
        self.model.spatial = True
        return torch.cat(values)

    def settings(self) -> dict[str, str]:
        return {"net": self.net, "weights": self.weights, "backend": "torchmetrics"}


def masked_lpips(
    source: np.ndarray, output: np.ndarray, lpips: LPIPS, keep: np.ndarray | None = None
) -> tuple[float | None, list[float | None]]:
    """LPIPS spatial map averaged over the ``keep (F, H, W)`` pixels: ``(mean over frames, per frame)``."""
    keep = _check_pair(source, output, keep)
    maps = lpips.spatial(np.asarray(source), np.asarray(output))  # (F, H, W)
    k = torch.from_numpy(keep).float()
    count = k.sum((1, 2))
    per_frame = [
        float(v) if n > 0 else None for v, n in zip((maps * k).sum((1, 2)) / count.clamp_min(1), count)
    ]
    return _mean(per_frame), per_frame


def pie_bench_preservation(
    source: np.ndarray,
    output: np.ndarray,
    keep: np.ndarray,
    lpips: LPIPS | None = None,
    max_psnr: float = 100.0,
) -> dict[str, float | None]:
    """PIE-Bench / FiVE-Bench background preservation: both frames times the preserved-pixel mask, then
    torchmetrics' whole-image PSNR and SSIM (data range 1) and LPIPS, each a mean over frames."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    keep = _check_pair(source, output, keep)
    masked_source = np.asarray(source) * keep[..., None].astype(np.uint8)  # edited regions set to 0
    masked_output = np.asarray(output) * keep[..., None].astype(np.uint8)
    a = torch.from_numpy(masked_source).permute(0, 3, 1, 2).float() / 255  # (F, 3, H, W) in [0, 1]
    b = torch.from_numpy(masked_output).permute(0, 3, 1, 2).float() / 255
    psnr = [
        min(max_psnr, float(peak_signal_noise_ratio(b[i : i + 1], a[i : i + 1], data_range=1.0)))
        for i in range(len(a))
    ]
    ssim = [
        float(structural_similarity_index_measure(b[i : i + 1], a[i : i + 1], data_range=1.0))
        for i in range(len(a))
    ]
    out: dict[str, float | None] = {
        "psnr_preserved": float(np.mean(psnr)),
        "ssim_preserved": float(np.mean(ssim)),
    }
    if lpips is not None:
        out["lpips_preserved"] = float(lpips.distance(masked_source, masked_output).mean())
    return out


def preservation(
    source: np.ndarray,
    output: np.ndarray,
    masks: np.ndarray | None,
    regions: Sequence[str],
    local_prompts: Sequence[str] = (),
    max_psnr: float = 100.0,
    lpips: LPIPS | None = None,
    protocol: Literal["outside", "pie_bench"] = "outside",
) -> dict[str, Any]:
    """PSNR/SSIM/LPIPS outside the edited regions of one edit (see the module docstring).

    Args:
        source, output: ``(F, H, W, 3)`` uint8.
        masks: ``(F, R, H, W)`` bool region masks at the working size, or ``None``.
        regions: the ``R`` region names (order of the local prompts).
        local_prompts: the edit's local prompts (``()`` for a plain prompt).
        max_psnr: the value reported for identical pixels (dB).
        lpips: the LPIPS network, or ``None`` (no ``lpips_preserved``).
        protocol: ``outside`` or ``pie_bench``.

    Returns:
        ``{"psnr_preserved", "ssim_preserved", ["lpips_preserved"], "preserved_fraction",
        "edited_regions"}`` or ``{"skipped": reason}``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"background protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if masks is None:
        return {"skipped": "no region masks: nothing is known to be preserved"}
    edited = edited_regions(regions, local_prompts)
    keep = preserved_mask(masks, regions, edited)
    fraction = float(keep.mean())
    if fraction == 0:
        return {"skipped": f"the edited regions {edited} cover every pixel", "edited_regions": edited}
    out: dict[str, Any] = {"preserved_fraction": fraction, "edited_regions": edited}
    if protocol == "pie_bench":
        out.update(pie_bench_preservation(source, output, keep, lpips, max_psnr))
        return out
    out["psnr_preserved"], _ = masked_psnr(source, output, keep, max_psnr=max_psnr)
    out["ssim_preserved"], _ = masked_ssim(source, output, keep)
    if out["ssim_preserved"] is None:
        out["ssim_skipped"] = "no 11x11 window lies entirely in the preserved area"
    if lpips is not None:
        out["lpips_preserved"], _ = masked_lpips(source, output, lpips, keep)
    return out


def psnr(a: np.ndarray, b: np.ndarray, max_psnr: float = 100.0) -> float:
    """PSNR (dB, 8-bit peak) of two whole clips ``(F, H, W, 3)`` uint8: mean over frames (see :func:`masked_psnr`)."""
    value, _ = masked_psnr(a, b, None, max_psnr)
    return float(value) if value is not None else math.nan
