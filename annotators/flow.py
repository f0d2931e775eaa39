"""Optical flow: estimation (RAFT when its weights exist, OpenCV DIS otherwise), warping, composition,
forward-backward occlusion, resizing to token grids, and a per-video cache.

Conventions (used everywhere in the project):

* A flow is a float tensor ``(N, 2, H, W)`` in **pixels**; channel 0 is the horizontal displacement
  ``dx`` (towards +x, right), channel 1 the vertical ``dy`` (towards +y, down).
* ``flow_a_to_b`` says where each pixel of frame ``a`` is in frame ``b``: pixel ``p`` of ``a`` shows the
  same point as ``p + flow_a_to_b(p)`` of ``b``.
* :func:`warp` is a *backward* warp: ``warp(x_b, flow_a_to_b)`` samples ``x_b`` at ``p + flow(p)`` and
  so returns ``x_b`` aligned with frame ``a``. To bring the previous frame into the current one, use
  the flow **current -> previous**: ``warp(prev, flow_cur_to_prev)``.
* :func:`compose` chains flows: ``compose(flow_a_to_b, flow_b_to_c) = flow_a_to_c``.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from videoedit.io.atomic import atomic_path

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------- geometry


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


# ---------------------------------------------------------------------------------------- estimators


def _to_uint8_hwc(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 from uint8 HWC arrays or ``(N, 3, H, W)`` float tensors in [-1, 1]."""
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            return frames.cpu().numpy()
        x = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).numpy()
    return np.asarray(frames)


class FlowEstimator(ABC):
    """Estimates ``flow_a_to_b (N, 2, H, W)`` between frames ``(N, H, W, 3)`` uint8 (or ``(N, 3, H, W)`` in [-1, 1])."""

    name: str = ""

    @abstractmethod
    def estimate(self, frames_a: np.ndarray, frames_b: np.ndarray) -> torch.Tensor: ...

    def __call__(
        self, frames_a: np.ndarray | torch.Tensor, frames_b: np.ndarray | torch.Tensor
    ) -> torch.Tensor:
        a, b = _to_uint8_hwc(frames_a), _to_uint8_hwc(frames_b)
        if a.shape != b.shape or a.ndim != 4:
            raise ValueError(f"frames must both be (N, H, W, 3); got {a.shape} and {b.shape}")
        return self.estimate(a, b)

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name}


class DISFlow(FlowEstimator):
    """OpenCV's Dense Inverse Search flow: no weights, fast, accurate on real clips.

    Args:
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"`` (OpenCV presets).
    """

    name = "dis"
    _PRESETS: ClassVar[dict[str, int]] = {"ultrafast": 0, "fast": 1, "medium": 2}

    def __init__(self, preset: Literal["ultrafast", "fast", "medium"] = "medium") -> None:
        if preset not in self._PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(self._PRESETS)}, got {preset!r}")
        self.preset = preset

    def estimate(self, frames_a: np.ndarray, frames_b: np.ndarray) -> torch.Tensor:
        dis = cv2.DISOpticalFlow_create(self._PRESETS[self.preset])
        flows = []
        for a, b in zip(frames_a, frames_b, strict=True):
            ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
            flows.append(dis.calc(ga, gb, None))
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float().contiguous()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "preset": self.preset}


RAFT_URL_NAME = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"  # torchvision's Raft_Large_Weights.DEFAULT file


def raft_weights_path(weights: str | None = None) -> Path | None:
    """A local RAFT-large state dict: ``weights`` if it is a file, else torch hub's cached download."""
    if weights and Path(weights).expanduser().is_file():
        return Path(weights).expanduser()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / RAFT_URL_NAME
    return cached if cached.is_file() else None


class RAFTFlow(FlowEstimator):
    """torchvision's RAFT-large (the official VideoGrain/FLATTEN/StreamV2V choice).

    Args:
        weights: path of a RAFT-large state dict; ``None`` uses torch hub's cache of the torchvision
            weights (downloaded only when ``download=True``).
        num_flow_updates: RAFT iterations (torchvision default 12).
        device: where to run.
        batch_size: frame pairs per forward.
    """

    name = "raft"

    def __init__(
        self,
        weights: str | None = None,
        num_flow_updates: int = 12,
        device: str = "cpu",
        batch_size: int = 4,
        download: bool = False,
    ) -> None:
        from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

        path = raft_weights_path(weights)
        self.model = raft_large(weights=None, progress=False)
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
        elif download:
            state = Raft_Large_Weights.DEFAULT.get_state_dict(progress=False)
        else:
            raise FileNotFoundError(
                f"RAFT weights not found ({weights or 'no path given'}; also looked for torch hub's cached "
                f"{Path(torch.hub.get_dir()) / 'checkpoints' / RAFT_URL_NAME}). Download them from "
                f"{Raft_Large_Weights.DEFAULT.url}, or use the weight-free estimator (flow backend 'dis')."
            )
        self.model.load_state_dict(state)
        self.model.eval().requires_grad_(False).to(device)
        self.weights = str(path or Raft_Large_Weights.DEFAULT.url)
        self.num_flow_updates = num_flow_updates
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def estimate(self, frames_a: np.ndarray, frames_b: np.ndarray) -> torch.Tensor:
        n, h, w, _ = frames_a.shape
        # RAFT needs sides that are multiples of 8 and at least 128: upscale small frames, pad the rest
        scale = max(1.0, 128 / min(h, w))
        sh, sw = round(h * scale), round(w * scale)
        ph, pw = (-sh) % 8, (-sw) % 8

        def prep(x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            if (sh, sw) != (h, w):
                t = F.interpolate(t, size=(sh, sw), mode="bilinear", align_corners=False)
            return F.pad(t, (0, pw, 0, ph), mode="replicate").to(self.device)

        out = []
        for s in range(0, n, self.batch_size):
            a, b = prep(frames_a[s : s + self.batch_size]), prep(frames_b[s : s + self.batch_size])
            flow = self.model(a, b, num_flow_updates=self.num_flow_updates)[-1][..., :sh, :sw].float().cpu()
            out.append(resize_flow(flow, (h, w), mode="bilinear"))
        return torch.cat(out)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "weights": self.weights, "updates": self.num_flow_updates}


def build_flow_estimator(
    backend: Literal["auto", "raft", "dis"] = "auto",
    raft_weights: str | None = None,
    device: str = "cpu",
    dis_preset: Literal["ultrafast", "fast", "medium"] = "medium",
) -> FlowEstimator:
    """The flow estimator of a config: ``raft`` (weights required), ``dis``, or ``auto`` = RAFT when
    its weights are on disk, DIS otherwise (logged)."""
    if backend == "dis":
        return DISFlow(dis_preset)
    if backend == "raft":
        return RAFTFlow(raft_weights, device=device)
    if backend != "auto":
        raise ValueError(f"flow backend must be auto, raft or dis, got {backend!r}")
    if raft_weights_path(raft_weights) is not None:
        return RAFTFlow(raft_weights, device=device)
    logger.info("RAFT weights not found: using OpenCV DIS optical flow")
    return DISFlow(dis_preset)


# ---------------------------------------------------------------------------------------- videos


def video_flows(
    frames: np.ndarray | torch.Tensor,
    estimator: FlowEstimator,
    direction: Literal["forward", "backward"] = "forward",
) -> torch.Tensor:
    """Flows between consecutive frames of a clip ``(F, H, W, 3)``: ``(F-1, 2, H, W)``.

    ``forward``: ``f_t->t+1`` for t = 0..F-2. ``backward``: ``f_t+1->t`` (what warps frame ``t`` into
    frame ``t+1``).
    """
    frames = _to_uint8_hwc(frames)
    if len(frames) < 2:
        return torch.zeros(0, 2, *frames.shape[1:3])
    if direction == "forward":
        return estimator(frames[:-1], frames[1:])
    if direction == "backward":
        return estimator(frames[1:], frames[:-1])
    raise ValueError(f"direction must be forward or backward, got {direction!r}")


class FlowCache:
    """Flows of a clip on disk (``<root>/<key>.safetensors``), keyed by the frames and the estimator settings."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, frames: np.ndarray | torch.Tensor, estimator: FlowEstimator, direction: str) -> str:
        data = _to_uint8_hwc(frames)
        digest = hashlib.sha256(np.ascontiguousarray(data).tobytes())
        digest.update(f"{data.shape}:{sorted(estimator.settings().items())}:{direction}".encode())
        return digest.hexdigest()[:32]

    def flows(
        self,
        frames: np.ndarray | torch.Tensor,
        estimator: FlowEstimator,
        direction: Literal["forward", "backward"] = "forward",
    ) -> torch.Tensor:
        """:func:`video_flows`, read from the cache when computed before."""
        path = self.root / f"{self.key(frames, estimator, direction)}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))["flows"]
            except Exception as err:  # a corrupt entry is recomputed
                logger.warning("discarding flow cache entry %s: %s", path, err)
        flows = video_flows(frames, estimator, direction)
        with atomic_path(path) as tmp:
            save_file({"flows": flows.contiguous()}, str(tmp))
        return flows
