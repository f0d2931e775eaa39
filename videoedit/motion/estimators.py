"""Optical-flow estimators (RAFT-large when its weights exist, OpenCV DIS otherwise) and clip flows.

Flows follow the conventions of :mod:`videoedit.motion`: ``(N, 2, H, W)`` float pixels, ``flow_a_to_b``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from videoedit.motion.warping import resize_flow

logger = logging.getLogger(__name__)


def to_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
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
        a, b = to_uint8_frames(frames_a), to_uint8_frames(frames_b)
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


def video_flows(
    frames: np.ndarray | torch.Tensor,
    estimator: FlowEstimator,
    direction: Literal["forward", "backward"] = "forward",
) -> torch.Tensor:
    """Flows between consecutive frames of a clip ``(F, H, W, 3)``: ``(F-1, 2, H, W)``.

    ``forward``: ``f_t->t+1`` for t = 0..F-2. ``backward``: ``f_t+1->t`` (what warps frame ``t`` into
    frame ``t+1``).
    """
    frames = to_uint8_frames(frames)
    if len(frames) < 2:
        return torch.zeros(0, 2, *frames.shape[1:3])
    if direction == "forward":
        return estimator(frames[:-1], frames[1:])
    if direction == "backward":
        return estimator(frames[1:], frames[:-1])
    raise ValueError(f"direction must be forward or backward, got {direction!r}")
