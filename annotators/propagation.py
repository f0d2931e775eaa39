"""Propagating keyframe masks through a video.

:class:`FlowMaskPropagator` (weight-free unless SAM weights are given) carries each keyframe's mask from
frame to frame along the optical flow (RAFT when its weights exist, OpenCV DIS otherwise; conventions of
:mod:`videoedit.motion`), refined at every step by

* ``refine="adaptive"`` (default): the tracker of :mod:`annotators.mask_refine`: the previous mask
  warped with the flow ``t -> t-1`` and intersected with its forward splat (no label dragged into
  revealed background), disocclusions near the boundary found by a forward-backward check and given a
  background-leaning prior, colour evidence from the keyframe's histograms mixed with local per-cell
  histograms (re-anchored on confident frames, on the foreground carried from the keyframe only: the
  leak control against similar background), a guided filter snapping the boundary to image edges.
  Flows at 240 lines by default (``flow_scale``);
* ``refine="color"`` (the default before 2026-12): the mask of frame ``t-1`` backward-warped, then a
  Bayesian update near the warped boundary with the keyframe's colour model: the warped mask, blurred
  by ``prior_sigma``, is the prior, the ratio of the keyframe's foreground/background RGB histograms
  (raised to ``color_weight``) the likelihood; pixels whose posterior is > 0.5 are inside;
* ``refine="threshold"``: kept where the warped (bilinear) mask is > 0.5;
* with a :class:`~annotators.sam.SamSegmenter` (SAM weights), SAM re-segments each frame from the box
  and the innermost point of that mask, and its candidate closest to the mask replaces it when their
  IoU is at least ``sam_min_iou`` (guarding against SAM jumping to another object).

Frames between two keyframes are propagated from both and fused (``fusion="confidence"``, default):
each chain's per-pixel probability is weighted by ``fusion_decay ** distance`` times the product of its
steps' confidences, so the nearer and steadier keyframe wins; ``fusion="nearest"`` (the behaviour before
2026-12) takes the nearer keyframe's chain only. ``refine="color", fusion="nearest"`` is the old
propagator exactly. Quality and speed on DAVIS: ``benchmarks/bench_mask_propagation.py`` and
``benchmarks/README.md``.

:class:`~annotators.sam2_video.Sam2VideoPropagator` (SAM-2's video predictor, optional ``sam2`` package) lives
in :mod:`annotators.sam2_video`; it is re-exported here under its old import path.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal

import cv2
import numpy as np
import torch

from annotators.common import resolve_device
from annotators.mask_refine import AdaptiveMaskStep, AdaptiveParams, ColorModel
from annotators.sam import SamSegmenter
from annotators.sam2_video import Sam2VideoPropagator as Sam2VideoPropagator  # the old import path
from videoedit.errors import ConfigError
from videoedit.motion import FlowCache, FlowEstimator, build_flow_estimator, video_flows, warp

logger = logging.getLogger(__name__)

FLOW_LINES = 240  # default flow resolution (short side) of the adaptive mode

Refine = Literal["adaptive", "color", "threshold"]
Fusion = Literal["confidence", "nearest"]


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


def full_flow(flow: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """One flow ``(2, h, w)`` (pixels at its own size) -> ``(H, W, 2)`` float32 numpy at ``size = (H, W)``
    (bilinear, displacements rescaled)."""
    out = flow.permute(1, 2, 0).numpy().astype(np.float32, copy=False)
    height, width = size
    h, w = out.shape[:2]
    if (h, w) == (height, width):
        return np.ascontiguousarray(out)
    out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


class FlowMaskPropagator:
    """Keyframe masks -> masks on every frame, with optical flow (+ colour models, + SAM if given).

    Args:
        flow_backend: ``auto`` (RAFT when its weights are on disk, else DIS), ``raft`` or ``dis``.
        refine: ``adaptive`` (default), ``color`` or ``threshold`` (see the module docstring).
        prior_sigma: blur of the warped mask, as a fraction of the frame's short side (0.006 = 3 px at
            480p).
        color_weight: weight of the colour log-likelihood ratio (1 = plain Bayes; smaller trusts the
            flow more). ``None``: 1.2 with ``adaptive``, 0.5 with ``color``.
        color_bins: histogram cells per RGB channel of the keyframe's colour model.
        segmenter: SAM to re-segment every propagated frame (``None`` = weight-free).
        sam_min_iou: SAM's mask replaces the propagated one only when their IoU reaches this.
        raft_weights: a RAFT-large state dict (for ``auto``/``raft``).
        flow_cache_root: a folder to cache flows in (``None`` = no cache).
        device: where RAFT runs.
        fusion: how frames between two keyframes are decided: ``confidence`` (default: propagated from
            both, probabilities averaged with weights ``fusion_decay ** distance`` times the product of
            the chain's step confidences) or ``nearest`` (the nearer keyframe only; before 2026-12 the
            only behaviour).
        flow_scale: flows are estimated on frames resized by this factor and resized back (speed).
            ``None``: with ``adaptive``, the scale that brings the short side to 240 px (0.5 at 480p; 1
            for smaller frames, never upsampled); 1.0 with ``color``/``threshold``.
        local_weight: ``adaptive``: share of the local colour model in the colour evidence (0 = the
            keyframe's global model only).
        occlusion_prior: ``adaptive``: prior probability of a disoccluded pixel near the boundary.
        occlusion_band: ``adaptive``: how far from the warped boundary disocclusions are looked for
            (fraction of the short side; 0 = no occlusion check).
        smooth_radius: ``adaptive``: guided-filter radius in pixels at 480 lines (0 = no smoothing).
        palette_size: ``adaptive``: colours of the local model's palette.
        anchor_min_confidence: ``adaptive``: the local colour model is re-anchored on a frame only when
            the step's confidence (IoU of the new mask with the warped prior) reaches this.
        trusted_anchor: ``adaptive``: re-anchor the local model on the *trusted* foreground only (the
            keyframe mask carried by the warp; pixels that joined through colour are not taught as
            object: the leak control of :mod:`annotators.mask_refine`, step 5); ``False``: on the whole
            mask (the behaviour before it).
        fusion_decay: per-frame decay of a keyframe's weight in ``confidence`` fusion.
    """

    def __init__(
        self,
        flow_backend: Literal["auto", "raft", "dis"] = "auto",
        refine: Refine = "adaptive",
        prior_sigma: float = 0.006,
        color_weight: float | None = None,
        color_bins: int = 16,
        segmenter: SamSegmenter | None = None,
        sam_min_iou: float = 0.5,
        raft_weights: str | None = None,
        flow_cache_root: str | None = None,
        device: str = "auto",
        fusion: Fusion = "confidence",
        flow_scale: float | None = None,
        local_weight: float = 0.5,
        occlusion_prior: float = 0.25,
        occlusion_band: float = 0.03,
        smooth_radius: int = 4,
        palette_size: int = 32,
        anchor_min_confidence: float = 0.9,
        trusted_anchor: bool = True,
        fusion_decay: float = 0.9,
    ) -> None:
        if refine not in ("adaptive", "color", "threshold"):
            raise ConfigError(
                f"mask propagation refine must be 'adaptive', 'color' or 'threshold', got {refine!r}"
            )
        if fusion not in ("confidence", "nearest"):
            raise ConfigError(f"mask propagation fusion must be 'confidence' or 'nearest', got {fusion!r}")
        if flow_scale is not None and not 0.0 < flow_scale <= 1.0:
            raise ConfigError(f"mask propagation flow_scale must be in (0, 1], got {flow_scale}")
        if not 0.0 < fusion_decay <= 1.0:
            raise ConfigError(f"mask propagation fusion_decay must be in (0, 1], got {fusion_decay}")
        if not 0.0 <= local_weight <= 1.0 or not 0.0 <= occlusion_prior <= 1.0:
            raise ConfigError(
                f"mask propagation local_weight ({local_weight}) and occlusion_prior ({occlusion_prior}) "
                "must be in [0, 1]"
            )
        self.flow: FlowEstimator = build_flow_estimator(flow_backend, raft_weights, resolve_device(device))
        self.refine = refine
        self.fusion = fusion
        self.flow_scale = None if flow_scale is None else float(flow_scale)
        self.prior_sigma = float(prior_sigma)
        default_weight = 1.2 if refine == "adaptive" else 0.5
        self.color_weight = default_weight if color_weight is None else float(color_weight)
        self.color_bins = int(color_bins)
        self.segmenter = segmenter
        self.sam_min_iou = float(sam_min_iou)
        self.fusion_decay = float(fusion_decay)
        self.adaptive = AdaptiveParams(
            prior_sigma=self.prior_sigma,
            color_weight=self.color_weight,
            local_weight=float(local_weight),
            occlusion_prior=float(occlusion_prior),
            occlusion_band=float(occlusion_band),
            smooth_radius=int(smooth_radius),
            palette_size=int(palette_size),
            anchor_min_confidence=float(anchor_min_confidence),
            trusted_anchor=bool(trusted_anchor),
        )
        self.flow_cache = FlowCache(flow_cache_root) if flow_cache_root else None

    def settings(self) -> dict[str, Any]:
        out = {
            "propagation": "flow",
            "flow": self.flow.settings(),
            "flow_scale": "auto" if self.flow_scale is None else self.flow_scale,
            "refine": self.refine,
            "fusion": self.fusion,
            "prior_sigma": self.prior_sigma,
            "color_weight": self.color_weight,
            "color_bins": self.color_bins,
            "sam": None if self.segmenter is None else self.segmenter.settings(),
            "sam_min_iou": self.sam_min_iou,
        }
        if self.fusion == "confidence":
            out["fusion_decay"] = self.fusion_decay
        if self.refine == "adaptive":
            out["adaptive"] = asdict(self.adaptive)
        return out

    def scale_for(self, height: int, width: int) -> float:
        """The flow scale used for frames of this size (see ``flow_scale``)."""
        if self.flow_scale is not None:
            return self.flow_scale
        return min(1.0, FLOW_LINES / min(height, width)) if self.refine == "adaptive" else 1.0

    def _flows(self, frames: np.ndarray, direction: Literal["forward", "backward"]) -> torch.Tensor:
        """``(F-1, 2, h, w)`` flows between consecutive frames, estimated (and returned) at the flow scale;
        :func:`full_flow` brings one to the frames' size."""
        height, width = frames.shape[1:3]
        scale = self.scale_for(height, width)
        small = frames
        if scale != 1.0:
            size = (max(8, round(width * scale)), max(8, round(height * scale)))
            small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        if self.flow_cache is not None:
            return self.flow_cache.flows(small, self.flow, direction)
        return video_flows(small, self.flow, direction)

    def step(
        self,
        previous: np.ndarray,
        image: np.ndarray,
        flow_to_previous: torch.Tensor,
        color: ColorModel | None,
    ) -> np.ndarray:
        """The mask of the next frame with ``refine=color``/``threshold``.

        Args:
            previous: ``(H, W)`` bool mask of the frame we come from.
            image: ``(H, W, 3)`` uint8, the frame we go to.
            flow_to_previous: ``(2, H, W)`` flow from ``image``'s frame to the previous one.
            color: the keyframe's colour model (``None`` with ``threshold``).
        """
        soft = warp(torch.from_numpy(previous.astype(np.float32))[None, None], flow_to_previous[None])
        soft = soft[0, 0].clamp(0, 1).numpy()
        if self.refine == "threshold" or color is None:
            return soft > 0.5
        sigma = self.prior_sigma * min(image.shape[:2])
        return refine_with_color(soft, color.likelihood_ratio(image), sigma, self.color_weight)

    def _sam(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.segmenter is None or mask.sum() < 16:
            return mask
        x, y = innermost_point(mask)
        candidate, iou = self.segmenter.segment(
            image, np.array([[x, y]]), np.array([1]), mask_box(mask), reference=mask
        )
        return candidate if iou >= self.sam_min_iou else mask

    def _chain(
        self,
        frames: np.ndarray,
        key: int,
        mask: np.ndarray,
        targets: Sequence[int],
        back: torch.Tensor | None,
        fwd: torch.Tensor | None,
    ) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Propagate ``mask`` of frame ``key`` through ``targets`` (consecutive, moving away from it).

        Returns, per target, ``(mask (H, W) bool, probability (H, W) float32, weight)``; the weight is
        ``fusion_decay ** distance`` times the product of the steps' confidences.
        """
        out: list[tuple[np.ndarray, np.ndarray, float]] = []
        if not targets:
            return out
        color = ColorModel(frames[key], mask, self.color_bins) if self.refine != "threshold" else None
        tracker = (
            AdaptiveMaskStep(frames[key], mask, self.adaptive, color) if self.refine == "adaptive" else None
        )
        current, weight = mask, 1.0
        for t in targets:
            forward = t > key
            # back[i]: flow i+1 -> i; fwd[i]: flow i -> i+1
            size = frames.shape[1:3]
            to_prev = full_flow(back[t - 1] if forward else fwd[t], size)
            confidence = 1.0
            if tracker is not None:
                from_prev = full_flow(fwd[t - 1] if forward else back[t], size)
                current = tracker(frames[t], to_prev, from_prev)
                confidence = tracker.confidence
            else:
                current = self.step(current, frames[t], torch.from_numpy(to_prev).permute(2, 0, 1), color)
            refined = self._sam(frames[t], current)
            if tracker is not None and refined is current:
                prob = tracker.probability
            else:  # SAM's mask (or a hard mask of the old modes): its own probability
                prob = refined.astype(np.float32)
                if tracker is not None:
                    tracker.mask = refined
            current = refined
            weight *= self.fusion_decay * confidence
            out.append((current, prob, weight))
        return out

    def propagate(self, frames: np.ndarray, keyframes: Mapping[int, np.ndarray]) -> np.ndarray:
        """Masks on every frame from masks on some.

        Args:
            frames: ``(F, H, W, 3)`` uint8.
            keyframes: ``{position in frames: (H, W) bool mask}`` (at least one).

        Returns:
            ``(F, H, W)`` bool; keyframes keep their mask.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"propagate needs frames as an (F, H, W, 3) uint8 array, got {frames.shape} {frames.dtype}"
            )
        if not keyframes:
            raise ValueError("propagate needs at least one keyframe mask")
        num = len(frames)
        keys = sorted(int(k) for k in keyframes)
        if keys[0] < 0 or keys[-1] >= num:
            raise ValueError(f"keyframe positions {keys} outside 0..{num - 1}")
        masks = {k: np.asarray(keyframes[k], dtype=bool) for k in keys}
        for k, m in masks.items():
            if m.shape != frames.shape[1:3]:
                raise ValueError(
                    f"keyframe {k}'s mask is {m.shape} but the frames are {frames.shape[1:3]}: give one "
                    "(H, W) mask per keyframe at the frames' size"
                )
        # the chains to run: (keyframe, frames it goes through, in order)
        chains: list[tuple[int, list[int]]] = []
        if keys[0] > 0:
            chains.append((keys[0], list(range(keys[0] - 1, -1, -1))))
        for left, right in itertools.pairwise(keys):
            inner = list(range(left + 1, right))
            if self.fusion == "confidence":
                chains += [(left, inner), (right, inner[::-1])]
            else:  # nearest; ties go to the earlier keyframe
                half = (left + right) // 2
                chains += [(left, list(range(left + 1, half + 1))), (right, list(range(right - 1, half, -1)))]
        if keys[-1] < num - 1:
            chains.append((keys[-1], list(range(keys[-1] + 1, num))))
        adaptive = self.refine == "adaptive"
        need_back = adaptive or any(targets and targets[0] > k for k, targets in chains)
        need_fwd = adaptive or any(targets and targets[0] < k for k, targets in chains)
        back = self._flows(frames, "backward") if need_back and num > 1 else None
        fwd = self._flows(frames, "forward") if need_fwd and num > 1 else None
        out = np.zeros((num, *frames.shape[1:3]), dtype=bool)
        total = np.zeros((num, *frames.shape[1:3]), dtype=np.float32)
        weights = np.zeros(num, dtype=np.float64)
        for k, m in masks.items():
            out[k] = m
        for k, targets in chains:
            for t, (mask, prob, weight) in zip(targets, self._chain(frames, k, masks[k], targets, back, fwd)):
                weight = max(weight, 1e-12)
                total[t] += weight * prob
                weights[t] += weight
                out[t] = mask
        for t in range(num):
            if t not in masks and weights[t] > 0:
                out[t] = total[t] / weights[t] > 0.5
        return out
