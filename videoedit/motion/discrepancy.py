"""Flow-discrepancy masks for dual-flow attention: where does the edit move unlike the source?

The source flow ``F_src`` is measured between source frames, the generated flow ``F_gen`` between
edited frames (or their current clean-image predictions). Both use the flow conventions of
:mod:`videoedit.motion`; here they are always **backward** flows ``t -> t-1`` so that a mask lives on
the pixel grid of frame ``t`` (the query frame of attention).

Normalisation (documented, used everywhere):

    M(p) = min(1, ||F_src(p) - F_gen(p)||_2 / tolerance),   and M(p) = 1 where the source flow is occluded

``tolerance`` is in pixels of the grid the flows are given on (the dual-flow method works at latent
resolution, where 1 px = 8 image px for Stable Diffusion). ``M`` is 0 where both motions agree, rises
linearly with the disagreement and saturates at 1 once they differ by ``tolerance`` pixels. Occluded
pixels (forward-backward check of the source flow, including pixels that leave the frame) count as
fully discrepant: the previous frame has nothing reliable to offer there.

* **local** masks compare the flows ``t -> t-1``;
* **global** masks compare the flows ``t -> 0`` (the anchor), each composed from the consecutive ones
  with :func:`videoedit.motion.compose`; a pixel is occluded for the global mask when it is occluded
  locally or its position in frame ``t-1`` was occluded towards the anchor.

A frame's **admission score** (keyframe admission) is the per-pixel mean, in [0, 1], of the raw
discrepancy ``min(1, ||F_src - F_gen|| / tolerance)`` over the pixels that are *not* occluded (local and
global means weighted like the masks; 1 when no pixel is left). It is not the mean of the mask: occluded
pixels count as 1 in the mask, so a perfect edit's mask mean is the source's own occlusion rate (~0.1-0.2
on a 16-frame 256² pan with DIS, where the accumulated global occlusion keeps growing), and the bank
would admit nothing. For the score only, a border pixel whose flow points less than ``border_margin``
(0.5) px outside the frame is not counted as leaving it: sub-pixel outward flow at the border (flow
smoothing, resizing) flags a whole ring (~7% of a 32x32 grid) otherwise. The frame's motion is the
per-pixel mean flow magnitude, in pixels (not a global Frobenius norm, which grows with the image size
and made the public change log's thresholds unreachable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from videoedit.motion.warping import accumulate_backward, compose, occlusion, resize_flow, warp


def discrepancy(
    flow_src: torch.Tensor,
    flow_gen: torch.Tensor,
    occluded: torch.Tensor | None = None,
    tolerance: float = 1.0,
) -> torch.Tensor:
    """Discrepancy mask ``(N, 1, H, W)`` in [0, 1] between two flows ``(N, 2, H, W)`` (see the module docstring).

    Args:
        occluded: ``(N, 1, H, W)`` bool, pixels set to 1.
        tolerance: disagreement in pixels at which the mask saturates (> 0).
    """
    if flow_src.shape != flow_gen.shape:
        raise ValueError(f"flows differ in shape: {tuple(flow_src.shape)} vs {tuple(flow_gen.shape)}")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    diff = (flow_src.float() - flow_gen.float()).square().sum(1, keepdim=True).sqrt()
    mask = (diff / tolerance).clamp(0, 1)
    if occluded is not None:
        mask = torch.where(occluded.to(torch.bool), torch.ones_like(mask), mask)
    return mask


def propagate_occlusion(
    occluded_prev: torch.Tensor, occluded_local: torch.Tensor, flow_t_to_prev: torch.Tensor
) -> torch.Tensor:
    """Occlusion towards the anchor for frame ``t`` ``(N, 1, H, W)`` bool: occluded locally, or landing
    (by ``flow_t_to_prev``) on a pixel of frame ``t-1`` that was occluded towards the anchor."""
    carried = warp(occluded_prev.float(), flow_t_to_prev, padding_mode="border") > 0.5
    return occluded_local.bool() | carried


def clamp_near_border(flow: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Flows ``(N, 2, H, W)`` with the targets that lie less than ``margin`` px outside the frame moved onto
    its edge (per axis), so that :func:`videoedit.motion.out_of_frame` no longer flags them; other pixels
    keep their flow."""
    h, w = flow.shape[-2:]
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)

    def pull(target: torch.Tensor, size: int) -> torch.Tensor:
        near = ((target < 0) & (target > -margin)) | ((target > size - 1) & (target < size - 1 + margin))
        return torch.where(near, target.clamp(0, size - 1), target)

    return torch.stack([pull(xs + flow[:, 0], w) - xs, pull(ys + flow[:, 1], h) - ys], dim=1)


def valid_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-item mean ``(N,)`` of ``values (N, 1, H, W)`` over the ``valid`` pixels (bool, same shape);
    1 where no pixel is valid (nothing can be verified there)."""
    v = valid.float()
    count = v.flatten(1).sum(1)
    total = (values.float() * v).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))


@dataclass
class FrameMasks:
    """Masks of every frame of a clip (index = frame; frame 0, the anchor, has zeros).

    Attributes:
        local: ``(F, 1, H, W)`` masks of the flows ``t -> t-1``.
        global_: ``(F, 1, H, W)`` masks of the flows ``t -> 0``.
        combined: ``(F, 1, H, W)`` the weighted mean used by attention (:func:`combine_masks`).
        occluded: ``(F, 1, H, W)`` bool, the source's local occlusion.
        admission: ``(F,)`` the keyframe admission score (see the module docstring), in [0, 1].
    """

    local: torch.Tensor
    global_: torch.Tensor
    combined: torch.Tensor
    occluded: torch.Tensor
    admission: torch.Tensor

    @classmethod
    def anchor(cls, size: tuple[int, int], device: torch.device | str | None = None) -> FrameMasks:
        """The anchor's masks: zeros ``(1, 1, H, W)``, score 0."""
        zeros = torch.zeros(1, 1, *size, dtype=torch.float32, device=device)
        return cls(zeros, zeros, zeros, zeros.bool(), torch.zeros(1, device=device))

    @classmethod
    def cat(cls, parts: list[FrameMasks]) -> FrameMasks:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))


def combine_masks(
    local: torch.Tensor, global_: torch.Tensor, local_weight: float = 1.0, global_weight: float = 1.0
) -> torch.Tensor:
    """``(w_l * local + w_g * global) / (w_l + w_g)``, in [0, 1] (the change log's ``(m_l s_l + m_g s_g) / 2``
    with its default scales 1, normalised so that any weights keep the range)."""
    if local_weight < 0 or global_weight < 0 or local_weight + global_weight <= 0:
        raise ValueError(f"mask weights must be >= 0 and not both 0, got {local_weight}, {global_weight}")
    return (local_weight * local + global_weight * global_) / (local_weight + global_weight)


def _assemble(
    local: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    global_: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tolerance: float,
    local_weight: float,
    global_weight: float,
) -> FrameMasks:
    """Masks and scores of ``N`` frames from ``(src, gen, occluded, occluded_for_score)`` towards the
    previous frame (``local``) and the anchor (``global_``); flows ``(N, 2, H, W)``, occlusions
    ``(N, 1, H, W)`` bool."""
    raw_l = discrepancy(local[0], local[1], None, tolerance)
    raw_g = discrepancy(global_[0], global_[1], None, tolerance)
    mask_l = torch.where(local[2], torch.ones_like(raw_l), raw_l)
    mask_g = torch.where(global_[2], torch.ones_like(raw_g), raw_g)
    score = combine_masks(
        valid_mean(raw_l, ~local[3]), valid_mean(raw_g, ~global_[3]), local_weight, global_weight
    )
    return FrameMasks(
        mask_l, mask_g, combine_masks(mask_l, mask_g, local_weight, global_weight), local[2], score
    )


def _occlusions(
    src_bwd: torch.Tensor, src_fwd: torch.Tensor, alpha: float, beta: float, border_margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(occluded, occluded_for_score)`` ``(N, 1, H, W)`` bool: the forward-backward check, and the same
    with sub-``border_margin`` outward flow at the border not counted as leaving the frame."""
    occ = occlusion(src_bwd, src_fwd, alpha=alpha, beta=beta)
    occ_score = occlusion(clamp_near_border(src_bwd, border_margin), src_fwd, alpha=alpha, beta=beta)
    return occ, occ_score


def _carry(occluded: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Occlusion towards the anchor ``(T, 1, H, W)`` of frames ``1..T`` from their local occlusions and
    backward flows ``(T, 2, H, W)`` (:func:`propagate_occlusion` frame after frame)."""
    out = [occluded[0:1]]
    for t in range(1, occluded.shape[0]):
        out.append(propagate_occlusion(out[-1], occluded[t : t + 1], flows[t : t + 1]))
    return torch.cat(out)


def frame_masks(
    src_bwd: torch.Tensor,
    src_fwd: torch.Tensor,
    gen_bwd: torch.Tensor,
    tolerance: float = 1.0,
    local_weight: float = 1.0,
    global_weight: float = 1.0,
    alpha: float = 0.01,
    beta: float = 0.5,
    border_margin: float = 0.5,
) -> FrameMasks:
    """Local, global and combined masks and admission scores of all frames of a clip.

    Args:
        src_bwd: ``(F, 2, H, W)`` source flows; index ``t`` holds ``t -> t-1`` (index 0 unused).
        src_fwd: ``(F, 2, H, W)`` source flows; index ``t`` holds ``t-1 -> t`` (index 0 unused), for the
            occlusion check.
        gen_bwd: ``(F, 2, H, W)`` generated flows ``t -> t-1`` (index 0 unused).
        tolerance, alpha, beta: see :func:`discrepancy` and :func:`videoedit.motion.occlusion`.
        border_margin: outward flow (px) at the border not counted as leaving the frame in the score.
    """
    anchor = FrameMasks.anchor(tuple(src_bwd.shape[-2:]), src_bwd.device)
    if src_bwd.shape[0] < 2:
        return anchor
    src, fwd, gen = src_bwd[1:].float(), src_fwd[1:].float(), gen_bwd[1:].float()
    occ, occ_score = _occlusions(src, fwd, alpha, beta, border_margin)
    masks = _assemble(
        (src, gen, occ, occ_score),
        (accumulate_backward(src), accumulate_backward(gen), _carry(occ, src), _carry(occ_score, src)),
        tolerance,
        local_weight,
        global_weight,
    )
    return FrameMasks.cat([anchor, masks])


class MaskTracker:
    """Frame-by-frame :func:`frame_masks` for streaming: keeps only the flows of the last frame to the
    anchor, so its memory does not depend on the clip length.

    Call :meth:`masks` for the frame being edited (as often as its generated flow changes), then
    :meth:`commit` once it is finished: the state of the last :meth:`masks` call (its final generated
    flow) becomes the reference of the next frame. The first frame is the anchor (zero masks).
    """

    def __init__(
        self,
        tolerance: float = 1.0,
        local_weight: float = 1.0,
        global_weight: float = 1.0,
        alpha: float = 0.01,
        beta: float = 0.5,
        border_margin: float = 0.5,
    ) -> None:
        self.tolerance, self.alpha, self.beta, self.border_margin = tolerance, alpha, beta, border_margin
        self.local_weight, self.global_weight = local_weight, global_weight
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        # flows t -> 0 (source, generated) and occlusions towards the anchor (mask, score)
        self._acc: tuple[torch.Tensor, ...] | None = None
        self._pending: tuple[torch.Tensor, ...] | None = None

    def masks(self, src_bwd: torch.Tensor, src_fwd: torch.Tensor, gen_bwd: torch.Tensor) -> FrameMasks:
        """Masks ``(1, 1, H, W)`` of the next frame from its flows ``(1, 2, H, W)`` (``t -> t-1``,
        ``t-1 -> t``, generated ``t -> t-1``); ignored for the anchor."""
        if self.frames == 0:
            self._pending = None
            return FrameMasks.anchor(tuple(src_bwd.shape[-2:]), src_bwd.device)
        src, fwd, gen = src_bwd.float(), src_fwd.float(), gen_bwd.float()
        occ, occ_score = _occlusions(src, fwd, self.alpha, self.beta, self.border_margin)
        if self._acc is None:
            acc = (src, gen, occ, occ_score)
        else:
            src_acc, gen_acc, occ_acc, score_acc = self._acc
            acc = (
                compose(src, src_acc),
                compose(gen, gen_acc),
                propagate_occlusion(occ_acc, occ, src),
                propagate_occlusion(score_acc, occ_score, src),
            )
        self._pending = acc
        return _assemble(
            (src, gen, occ, occ_score), acc, self.tolerance, self.local_weight, self.global_weight
        )

    def commit(self) -> None:
        """The frame is finished: the flows of its last :meth:`masks` call become the next one's reference."""
        if self.frames > 0:
            if self._pending is None:
                raise RuntimeError("MaskTracker.commit(): call masks() with the frame's final flows first")
            self._acc = self._pending
        self._pending = None
        self.frames += 1


def mean_discrepancy(mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean of masks ``(N, 1, H, W)``: ``(N,)`` in [0, 1]."""
    return mask.float().flatten(1).mean(1)


def motion_magnitude(flow: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean displacement ``(N,)`` in pixels of flows ``(N, 2, H, W)``."""
    return flow.float().square().sum(1).sqrt().flatten(1).mean(1)


def masks_to_video(masks: torch.Tensor, size: tuple[int, int] | None = None):
    """Masks ``(F, 1, h, w)`` in [0, 1] as a grey ``(F, H, W, 3)`` uint8 video (nearest upsampling to ``size``)."""
    x = masks.float()
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="nearest")
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).cpu().numpy()


def estimate_flow(
    estimator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    frames_a: torch.Tensor,
    frames_b: torch.Tensor,
    size: tuple[int, int] | None = None,
    min_side: int = 32,
) -> torch.Tensor:
    """Flow ``a -> b`` ``(N, 2, h, w)`` between float frames ``(N, 3, H, W)`` in [-1, 1], at ``size``.

    Frames smaller than ``min_side`` are upsampled first (OpenCV's DIS refuses images under 12 px and is
    unreliable on very small ones); the flow is resized to ``size`` (default: the frames' size) with its
    values scaled accordingly.
    """
    h, w = frames_a.shape[-2:]
    size = (h, w) if size is None else tuple(size)
    scale = max(1.0, min_side / min(h, w))
    if scale > 1:
        big = (round(h * scale), round(w * scale))
        frames_a = F.interpolate(frames_a.float(), size=big, mode="bilinear", align_corners=False)
        frames_b = F.interpolate(frames_b.float(), size=big, mode="bilinear", align_corners=False)
    flow = estimator(frames_a.float().cpu().clamp(-1, 1), frames_b.float().cpu().clamp(-1, 1))
    return resize_flow(flow, size, mode="area" if flow.shape[-1] >= size[1] else "bilinear")
