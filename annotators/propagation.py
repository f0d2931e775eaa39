"""Propagating keyframe masks through a video.

:class:`FlowMaskPropagator` (weight-free unless SAM weights are given): the mask of frame ``t-1`` is
backward-warped into frame ``t`` with the optical flow ``t -> t-1`` (RAFT when its weights exist, OpenCV
DIS otherwise; conventions of :mod:`videoedit.motion`), then

* ``refine="threshold"``: kept where the warped (bilinear) mask is > 0.5;
* ``refine="color"`` (default): a Bayesian update near the warped boundary with a colour model of the
  keyframe: the warped mask, blurred by ``prior_sigma``, is the prior, the ratio of the keyframe's
  foreground/background RGB histograms (raised to ``color_weight``) the likelihood; pixels whose
  posterior is > 0.5 are inside. This stops the drift of plain warping (disoccluded background
  dragged along behind a moving person, thin parts lost) without any weights;
* with a :class:`~annotators.sam.SamSegmenter` (SAM weights), SAM re-segments each frame from the box
  and the innermost point of that mask, and its candidate closest to the mask replaces it when their
  IoU is at least ``sam_min_iou`` (guarding against SAM jumping to another object).

Frames between keyframes take the mask propagated from the nearer keyframe (forward from the one
before, backward from the one after). Quality on DAVIS: ``benchmarks/bench_mask_propagation.py``.

:class:`Sam2VideoPropagator` uses SAM-2's video predictor when the ``sam2`` package and its weights are
installed (not a dependency of this project: that path is untested here).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from annotators.common import module_available, resolve_device
from annotators.sam import SamSegmenter
from videoedit.errors import ConfigError, ModelLoadError
from videoedit.motion import FlowCache, FlowEstimator, build_flow_estimator, video_flows, warp

logger = logging.getLogger(__name__)

Refine = Literal["color", "threshold"]


class ColorModel:
    """Foreground/background RGB histograms (``bins``³ cells, Laplace-smoothed) of one frame.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool foreground.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, bins: int = 16) -> None:
        self.bins = bins
        cells = self.cells(image)
        n = bins**3
        self.fg = (np.bincount(cells[mask], minlength=n) + 1.0) / (mask.sum() + n)
        self.bg = (np.bincount(cells[~mask], minlength=n) + 1.0) / ((~mask).sum() + n)

    def cells(self, image: np.ndarray) -> np.ndarray:
        q = image.astype(np.int64) * self.bins // 256
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def likelihood_ratio(self, image: np.ndarray) -> np.ndarray:
        """``p(colour | inside) / p(colour | outside)`` per pixel, ``(H, W)`` float."""
        cells = self.cells(image)
        return self.fg[cells] / self.bg[cells]


def refine_with_color(warped: np.ndarray, ratio: np.ndarray, sigma: float, weight: float = 0.5) -> np.ndarray:
    """Posterior > 0.5 with prior = ``warped`` blurred by ``sigma`` px and likelihood ``ratio ** weight``.

    Args:
        warped: ``(H, W)`` float in [0, 1] (the warped mask).
        ratio: ``(H, W)`` colour likelihood ratio (inside / outside).

    Returns:
        ``(H, W)`` bool. Far from the warped boundary (prior exactly 0 or 1) nothing changes.
    """
    prior = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), sigma) if sigma > 0 else warped
    lik = np.power(ratio, weight)
    return prior * lik > (1.0 - prior)


def innermost_point(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the pixel farthest from the mask's border."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def mask_box(mask: np.ndarray, grow: float = 0.05) -> np.ndarray:
    """``(4,)`` ``x0, y0, x1, y1`` box of the mask, grown by ``grow`` of its size on each side."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    gx, gy = grow * (x1 - x0), grow * (y1 - y0)
    h, w = mask.shape
    return np.array([max(0, x0 - gx), max(0, y0 - gy), min(w, x1 + gx), min(h, y1 + gy)], dtype=np.float32)


class FlowMaskPropagator:
    """Keyframe masks -> masks on every frame, with optical flow (+ colour model, + SAM if given).

    Args:
        flow_backend: ``auto`` (RAFT when its weights are on disk, else DIS), ``raft`` or ``dis``.
        refine: ``color`` (default) or ``threshold`` (see the module docstring).
        prior_sigma: blur of the warped mask in the colour update, as a fraction of the frame's short
            side (0.006 = 3 px at 480p).
        color_weight: exponent of the colour likelihood ratio (1 = plain Bayes; smaller trusts the
            flow more).
        color_bins: histogram cells per RGB channel.
        segmenter: SAM to re-segment every propagated frame (``None`` = weight-free).
        sam_min_iou: SAM's mask replaces the propagated one only when their IoU reaches this.
        raft_weights: a RAFT-large state dict (for ``auto``/``raft``).
        flow_cache_root: a folder to cache flows in (``None`` = no cache).
        device: where RAFT runs.
    """

    def __init__(
        self,
        flow_backend: Literal["auto", "raft", "dis"] = "auto",
        refine: Refine = "color",
        prior_sigma: float = 0.006,
        color_weight: float = 0.5,
        color_bins: int = 16,
        segmenter: SamSegmenter | None = None,
        sam_min_iou: float = 0.5,
        raft_weights: str | None = None,
        flow_cache_root: str | None = None,
        device: str = "auto",
    ) -> None:
        if refine not in ("color", "threshold"):
            raise ConfigError(f"mask propagation refine must be 'color' or 'threshold', got {refine!r}")
        self.flow: FlowEstimator = build_flow_estimator(flow_backend, raft_weights, resolve_device(device))
        self.refine = refine
        self.prior_sigma = float(prior_sigma)
        self.color_weight = float(color_weight)
        self.color_bins = int(color_bins)
        self.segmenter = segmenter
        self.sam_min_iou = float(sam_min_iou)
        self.flow_cache = FlowCache(flow_cache_root) if flow_cache_root else None

    def settings(self) -> dict[str, Any]:
        return {
            "propagation": "flow",
            "flow": self.flow.settings(),
            "refine": self.refine,
            "prior_sigma": self.prior_sigma,
            "color_weight": self.color_weight,
            "color_bins": self.color_bins,
            "sam": None if self.segmenter is None else self.segmenter.settings(),
            "sam_min_iou": self.sam_min_iou,
        }

    def _flows(self, frames: np.ndarray, direction: Literal["forward", "backward"]) -> torch.Tensor:
        if self.flow_cache is not None:
            return self.flow_cache.flows(frames, self.flow, direction)
        return video_flows(frames, self.flow, direction)

    def step(
        self, previous: np.ndarray, image: np.ndarray, flow_to_previous: torch.Tensor, color: ColorModel
    ) -> np.ndarray:
        """The mask of the next frame.

        Args:
            previous: ``(H, W)`` bool mask of the frame we come from.
            image: ``(H, W, 3)`` uint8, the frame we go to.
            flow_to_previous: ``(2, H, W)`` flow from ``image``'s frame to the previous one.
            color: the keyframe's colour model.
        """
        soft = warp(torch.from_numpy(previous.astype(np.float32))[None, None], flow_to_previous[None])
        soft = soft[0, 0].clamp(0, 1).numpy()
        if self.refine == "threshold":
            mask = soft > 0.5
        else:
            sigma = self.prior_sigma * min(image.shape[:2])
            mask = refine_with_color(soft, color.likelihood_ratio(image), sigma, self.color_weight)
        if self.segmenter is not None and mask.sum() >= 16:
            x, y = innermost_point(mask)
            candidate, iou = self.segmenter.segment(
                image, np.array([[x, y]]), np.array([1]), mask_box(mask), reference=mask
            )
            if iou >= self.sam_min_iou:
                mask = candidate
        return mask

    def propagate(self, frames: np.ndarray, keyframes: Mapping[int, np.ndarray]) -> np.ndarray:
        """Masks on every frame from masks on some.

        Args:
            frames: ``(F, H, W, 3)`` uint8.
            keyframes: ``{position in frames: (H, W) bool mask}`` (at least one).

        Returns:
            ``(F, H, W)`` bool; keyframes keep their mask.
        """
        if not keyframes:
            raise ValueError("propagate needs at least one keyframe mask")
        num = len(frames)
        keys = sorted(int(k) for k in keyframes)
        if keys[0] < 0 or keys[-1] >= num:
            raise ValueError(f"keyframe positions {keys} outside 0..{num - 1}")
        # which keyframe each frame follows, and in which direction
        source = np.zeros(num, dtype=np.int64)
        for t in range(num):
            source[t] = min(keys, key=lambda k: (abs(k - t), k > t))
        out = np.zeros((num, *frames.shape[1:3]), dtype=bool)
        need_fwd = any(source[t] < t for t in range(num))
        need_bwd = any(source[t] > t for t in range(num))
        back = self._flows(frames, "backward") if need_fwd else None  # back[t-1] = flow t -> t-1
        fwd = self._flows(frames, "forward") if need_bwd else None  # fwd[t] = flow t -> t+1
        for k in keys:
            mask = np.asarray(keyframes[k], dtype=bool)
            out[k] = mask
            color = ColorModel(frames[k], mask, self.color_bins) if self.refine == "color" else None
            t, current = k + 1, mask
            while t < num and source[t] == k:
                current = self.step(current, frames[t], back[t - 1], color)
                out[t] = current
                t += 1
            t, current = k - 1, mask
            while t >= 0 and source[t] == k:
                current = self.step(current, frames[t], fwd[t], color)
                out[t] = current
                t -= 1
        return out


class Sam2VideoPropagator:
    """SAM-2's video predictor (``sam2`` package + its weights). UNTESTED here: ``sam2`` is not installed.

    Args:
        config: the SAM-2 model config name (e.g. ``configs/sam2.1/sam2.1_hiera_s.yaml``).
        checkpoint: the matching ``.pt`` file.
        device: ``auto``, ``cuda``, ``cpu``.
    """

    def __init__(self, config: str, checkpoint: str, device: str = "auto") -> None:
        if not module_available("sam2"):
            raise ModelLoadError(
                "SAM-2 propagation needs the `sam2` package (pip install from facebookresearch/sam2) and its "
                "weights; or use propagation=flow (weight-free)."
            )
        if not Path(checkpoint).expanduser().is_file():
            raise ModelLoadError(f"SAM-2 checkpoint {checkpoint} not found; or use propagation=flow.")
        self.config, self.checkpoint = config, checkpoint
        self.device = resolve_device(device)

    def settings(self) -> dict[str, Any]:
        return {"propagation": "sam2", "config": self.config, "checkpoint": str(self.checkpoint)}

    @torch.no_grad()
    def propagate_prompts(
        self, frames: np.ndarray, prompts: Sequence[Sequence[dict[str, Any]]]
    ) -> np.ndarray:
        """Masks ``(F, R, H, W)`` bool from per-region keyframe prompts.

        Args:
            frames: ``(F, H, W, 3)`` uint8.
            prompts: for each region, a list of ``{"position", "points", "labels", "box", "mask"}``
                (position in ``frames``; pixel coordinates).
        """
        from PIL import Image
        from sam2.build_sam import build_sam2_video_predictor

        predictor = build_sam2_video_predictor(self.config, self.checkpoint, device=self.device)
        num, height, width = frames.shape[:3]
        out = np.zeros((num, len(prompts), height, width), dtype=bool)
        with tempfile.TemporaryDirectory() as tmp:
            for i, frame in enumerate(frames):  # the predictor reads a folder of <int>.jpg
                Image.fromarray(frame).save(Path(tmp) / f"{i:05d}.jpg", quality=95)
            state = predictor.init_state(video_path=tmp)
            for r, region in enumerate(prompts):
                for p in region:
                    if p.get("mask") is not None:
                        predictor.add_new_mask(state, frame_idx=p["position"], obj_id=r, mask=p["mask"])
                    else:
                        predictor.add_new_points_or_box(
                            state,
                            frame_idx=p["position"],
                            obj_id=r,
                            points=p.get("points"),
                            labels=p.get("labels"),
                            box=p.get("box"),
                        )
            for reverse in (False, True):
                for t, obj_ids, logits in predictor.propagate_in_video(state, reverse=reverse):
                    for obj, logit in zip(obj_ids, logits):
                        out[t, int(obj)] = (logit[0] > 0).cpu().numpy()
        return out
