"""Temporal consistency of an edited video: the warp error along the SOURCE video's optical flow.

Definition (the evaluation of StreamV2V's ``tools/warp_error.py``, recomputed in float):

* the flow is estimated between consecutive **source** frames, ``flow_t->t+1`` (and ``flow_t+1->t`` for
  the occlusion check); an edit should move the way the source moves;
* the output frame ``t+1`` is backward-warped into frame ``t``: ``warp(out[t+1], flow_t->t+1)``
  (``videoedit.motion`` conventions);
* pixels of frame ``t`` that are occluded in ``t+1`` or leave the frame (forward-backward check,
  ``videoedit.motion.occlusion``, UnFlow alpha 0.01, beta 0.5 as StreamV2V) are not counted;
* the error of a pair is the mean over the counted pixels and the 3 channels; the clip's error is the
  mean over the ``F-1`` pairs.

Units: ``warp_error`` is a mean absolute difference in **8-bit intensity levels** (0..255), the scale of
StreamV2V's tool; ``warp_mse`` is the mean squared difference of intensities in [0, 1], times 1000 (the
``x10^-3`` scale several papers print). Both are computed in float. StreamV2V's tool subtracts two
``uint8`` arrays, which wraps around (``3 - 5 = 254``): images differing by +-3 levels score ~110 instead
of 3. Its numbers are not comparable with ours.

The same error on the source itself (``source_warp_error``) is the floor set by the flow estimator: an
edit cannot be more consistent than the flow can tell.

**Motion alignment** (V2VBench ``motion_alignment``): minus the mean end-point error between the flow of
the edited clip and the flow of the source, ``-mean ||flow_edit(t->t+1) - flow_source(t->t+1)||_2`` over
all consecutive pairs and pixels, in pixels at the working resolution; estimated with the same estimator
as the warp error (V2VBench uses GMFlow; the backend is recorded).

Frames are ``(F, H, W, 3)`` uint8 or ``(F, 3, H, W)`` float in [-1, 1]; flows ``(F-1, 2, H, W)`` in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from videoedit.motion import FlowCache, FlowEstimator, occlusion, out_of_frame, video_flows, warp


def frames_to_float255(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(F, 3, H, W)`` float32 in [0, 255] from ``(F, H, W, 3)`` uint8 or ``(F, 3, H, W)`` in [-1, 1]."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape}")
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if frames.dtype == torch.uint8:
        return frames.permute(0, 3, 1, 2).float()
    return (frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5


@dataclass(frozen=True)
class SourceFlows:
    """The flows between consecutive source frames.

    Attributes:
        forward: ``(F-1, 2, H, W)`` ``flow_t->t+1``.
        backward: ``(F-1, 2, H, W)`` ``flow_t+1->t`` or ``None`` (then only pixels whose flow leaves
            the frame are left out: no occlusion check).
    """

    forward: torch.Tensor
    backward: torch.Tensor | None = None

    def valid(self, alpha: float = 0.01, beta: float = 0.5) -> torch.Tensor:
        """``(F-1, 1, H, W)`` bool: pixels of frame ``t`` counted in the error of pair ``(t, t+1)``."""
        if self.backward is None:
            return ~out_of_frame(self.forward)
        return ~occlusion(self.forward, self.backward, alpha=alpha, beta=beta)


def source_flows(
    frames: np.ndarray | torch.Tensor,
    estimator: FlowEstimator,
    cache: FlowCache | None = None,
    occlusion_check: bool = True,
) -> SourceFlows:
    """Estimate the flows of a source clip ``(F, H, W, 3)`` uint8 (read from ``cache`` when given)."""
    get = cache.flows if cache is not None else lambda f, e, d: video_flows(f, e, d)
    forward = get(frames, estimator, "forward")
    backward = get(frames, estimator, "backward") if occlusion_check else None
    return SourceFlows(forward.float(), None if backward is None else backward.float())


@dataclass(frozen=True)
class WarpError:
    """Warp error of one clip (units: see the module docstring)."""

    warp_error: float  # mean |a - b| in 8-bit levels (over counted pixels and channels, then pairs)
    warp_mse: float  # mean (a - b)^2 of [0, 1] intensities, x1000 (same averaging)
    per_pair: list[float]  # warp_error of each pair (t, t+1)
    valid_fraction: float  # share of pixels counted (not occluded, not leaving the frame)

    def as_dict(self) -> dict:
        return {
            "warp_error": self.warp_error,
            "warp_mse": self.warp_mse,
            "warp_error_per_pair": self.per_pair,
            "warp_valid_fraction": self.valid_fraction,
        }


def warp_error(
    frames: np.ndarray | torch.Tensor, flows: SourceFlows, alpha: float = 0.01, beta: float = 0.5
) -> WarpError:
    """Warp error of ``frames`` along the source flows (see the module docstring).

    Args:
        frames: the edited clip, ``(F, H, W, 3)`` uint8 or ``(F, 3, H, W)`` in [-1, 1].
        flows: :class:`SourceFlows` of the source clip (same ``F``, ``H``, ``W``).
        alpha, beta: forward-backward occlusion check parameters (StreamV2V: 0.01, 0.5).

    Returns:
        :class:`WarpError`. A clip of one frame has no pairs: errors are ``nan``.
    """
    x = frames_to_float255(frames)  # (F, 3, H, W) in [0, 255], float32
    if x.shape[0] - 1 != flows.forward.shape[0] or x.shape[-2:] != flows.forward.shape[-2:]:
        raise ValueError(
            f"frames {tuple(x.shape)} do not match the source flows {tuple(flows.forward.shape)} "
            "(expected F-1 flows of the same size)"
        )
    if x.shape[0] < 2:
        return WarpError(float("nan"), float("nan"), [], 0.0)
    valid = flows.valid(alpha, beta).float()  # (F-1, 1, H, W)
    aligned = warp(x[1:], flows.forward)  # out[t+1] seen from frame t
    diff = x[:-1] - aligned  # (F-1, 3, H, W), float: no wrap-around
    count = valid.sum((1, 2, 3)) * 3  # counted values per pair
    l1 = (diff.abs() * valid).sum((1, 2, 3)) / count.clamp_min(1)
    mse = ((diff / 255).square() * valid).sum((1, 2, 3)) / count.clamp_min(1)
    has = count > 0  # a pair whose pixels are all occluded has no error
    return WarpError(
        warp_error=float(l1[has].mean()) if has.any() else float("nan"),
        warp_mse=float(mse[has].mean() * 1000) if has.any() else float("nan"),
        per_pair=[float(v) if h else float("nan") for v, h in zip(l1, has)],
        valid_fraction=float(valid.mean()),
    )


def motion_alignment(
    frames: np.ndarray | torch.Tensor, flows: SourceFlows, estimator: FlowEstimator
) -> dict[str, float | list[float]]:
    """Motion alignment of an edited clip with its source (see the module docstring).

    Args:
        frames: the edited clip, ``(F, H, W, 3)`` uint8 or ``(F, 3, H, W)`` in [-1, 1].
        flows: the source's :class:`SourceFlows` (its ``forward`` flows are compared).
        estimator: the estimator that computed ``flows`` (the edited clip's flows use the same one).

    Returns:
        ``{"motion_alignment": -EPE, "motion_epe_per_pair": [EPE of pair (t, t+1)]}``; ``nan`` for one frame.
    """
    edited = video_flows(frames, estimator, "forward").float()  # (F-1, 2, H, W)
    if edited.shape != flows.forward.shape:
        raise ValueError(
            f"the edited clip's flows {tuple(edited.shape)} do not match the source flows "
            f"{tuple(flows.forward.shape)} (same frame count and size needed)"
        )
    if len(edited) == 0:
        return {"motion_alignment": float("nan"), "motion_epe_per_pair": []}
    epe = (edited - flows.forward).square().sum(1).sqrt()  # (F-1, H, W) end-point error per pixel
    return {
        "motion_alignment": -float(epe.mean()),
        "motion_epe_per_pair": [float(v) for v in epe.mean((1, 2))],
    }
