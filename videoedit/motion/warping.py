"""Flow geometry: backward warping, composition and accumulation, forward-backward occlusion, resizing
to token grids, photometric error. Pure tensor code; conventions in :mod:`videoedit.motion`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _base_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(1, 2, H, W)`` pixel coordinates ``(x, y)``."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None]


def warp(
    x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Backward-warp ``x (N, C, H, W)`` with ``flow (N, 2, H, W)``: ``out(p) = x(p + flow(p))``.

    Works for images and feature maps alike. Samples outside ``x`` take the border value
    (``padding_mode="zeros"`` to get zeros); use :func:`out_of_frame` to know which ones they are.
    """
    if x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"x {tuple(x.shape)} and flow {tuple(flow.shape)} must have the same spatial size")
    h, w = flow.shape[-2:]
    pos = _base_grid(h, w, flow.device, flow.dtype) + flow
    # normalise to [-1, 1] with align_corners=True: pixel 0 -> -1, pixel W-1 -> +1
    gx = 2 * pos[:, 0] / max(w - 1, 1) - 1
    gy = 2 * pos[:, 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x.to(flow.dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=True).to(
        x.dtype
    )


def out_of_frame(flow: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` bool: pixels whose target ``p + flow(p)`` falls outside the frame."""
    _, _, h, w = flow.shape
    pos = _base_grid(h, w, flow.device, flow.dtype) + flow
    outside = (pos[:, 0] < 0) | (pos[:, 0] > w - 1) | (pos[:, 1] < 0) | (pos[:, 1] > h - 1)
    return outside[:, None]


def compose(flow_a_to_b: torch.Tensor, flow_b_to_c: torch.Tensor) -> torch.Tensor:
    """``flow_a_to_c = flow_a_to_b + warp(flow_b_to_c, flow_a_to_b)``."""
    return flow_a_to_b + warp(flow_b_to_c, flow_a_to_b)


def accumulate(flows: torch.Tensor) -> torch.Tensor:
    """Chain consecutive flows ``(T, 2, H, W)`` (``f_0->1, f_1->2, ...``) into ``(T, 2, H, W)`` flows
    ``0->1, 0->2, ..., 0->T``. For backward flows (``f_1->0, f_2->1, ...``) use
    :func:`accumulate_backward`."""
    out = [flows[0:1]]
    for t in range(1, flows.shape[0]):
        out.append(compose(out[-1], flows[t : t + 1]))
    return torch.cat(out)


def accumulate_backward(flows: torch.Tensor) -> torch.Tensor:
    """Chain backward flows ``(T, 2, H, W)`` (``f_1->0, f_2->1, ..., f_T->T-1``) into ``t -> 0`` flows:
    ``f_t->0 = f_t->t-1 + warp(f_t-1->0, f_t->t-1)``."""
    out = [flows[0:1]]
    for t in range(1, flows.shape[0]):
        out.append(compose(flows[t : t + 1], out[-1]))
    return torch.cat(out)


def occlusion(
    flow_a_to_b: torch.Tensor, flow_b_to_a: torch.Tensor, alpha: float = 0.01, beta: float = 0.5
) -> torch.Tensor:
    """Forward-backward consistency check (UnFlow): ``(N, 1, H, W)`` bool, True where a pixel of ``a``
    is occluded in ``b`` (or leaves the frame).

    A pixel is consistent when going ``a -> b -> a`` returns to it:
    ``|f_ab + f_ba(p + f_ab)|^2 <= alpha * (|f_ab|^2 + |f_ba(p + f_ab)|^2) + beta``.
    """
    back = warp(flow_b_to_a, flow_a_to_b)
    err = (flow_a_to_b + back).square().sum(1, keepdim=True)
    bound = alpha * (flow_a_to_b.square().sum(1, keepdim=True) + back.square().sum(1, keepdim=True)) + beta
    return (err > bound) | out_of_frame(flow_a_to_b)


def resize_flow(flow: torch.Tensor, size: tuple[int, int], mode: str = "area") -> torch.Tensor:
    """Resize ``flow (N, 2, H, W)`` to ``size = (h, w)``, scaling ``dx`` by ``w/W`` and ``dy`` by ``h/H``
    (a flow at a token grid is measured in tokens)."""
    h, w = size
    src_h, src_w = flow.shape[-2:]
    if (h, w) == (src_h, src_w):
        return flow
    kwargs = {} if mode in ("area", "nearest") else {"align_corners": False}
    out = F.interpolate(flow, size=(h, w), mode=mode, **kwargs)
    scale = torch.tensor([w / src_w, h / src_h], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
    return out * scale


def flow_to_tokens(flow: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Flow at a token grid, flattened row-major like diffusers' tokens: ``(N, h*w, 2)``."""
    small = resize_flow(flow, grid)
    return small.flatten(2).transpose(1, 2)


def photometric_error(
    frame_a: torch.Tensor, frame_b: torch.Tensor, flow_a_to_b: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error (float) between ``frame_a`` and ``frame_b`` warped into ``a``, per item ``(N,)``.

    ``mask (N, 1, H, W)`` selects the pixels counted (e.g. ``~occlusion``).
    """
    diff = (frame_a.float() - warp(frame_b.float(), flow_a_to_b.float())).abs().mean(1, keepdim=True)
    if mask is None:
        return diff.flatten(1).mean(1)
    m = mask.float()
    return (diff * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
