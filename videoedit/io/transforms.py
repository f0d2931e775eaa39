"""Resizing and cropping that keeps frames, masks and condition maps aligned.

The official VideoGrain code scales frames so the short side is 512 and center-crops them, but reads
the masks without the crop; on non-square clips masks and frames then disagree. Here one geometric
plan (:class:`ResizePlan`) is computed from the frame size and applied to every per-pixel input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from videoedit.errors import ConfigError, ResolutionError
from videoedit.numerics import check_finite

ResizeMode = Literal["center_crop", "keep_aspect", "none"]


@dataclass(frozen=True)
class ResizeSpec:
    """How to bring frames to the model's working size (``data.resize`` in the data configs).

    Modes:
        ``center_crop`` (official VideoGrain/TokenFlow): scale so that the frame covers
            ``height x width`` and center-crop the overflow. With 512x512 this is "short side 512,
            center crop". The output is exactly ``height x width``.
        ``keep_aspect``: keep the whole picture and its aspect ratio. Without ``short_side`` the frame
            is scaled to fit inside ``height x width`` (one side touches the box, the other is at most
            its size); with ``short_side`` its short side becomes ``short_side`` and ``height``/
            ``width`` are not used. Both sides are then rounded down to a multiple of ``multiple``
            (the model's size step) by center-cropping less than ``multiple`` pixels. A 854x480 DAVIS
            clip: 512x256 in a 512x512 box (512x288, 32 rows cropped); 896x512 with ``short_side=512``.
        ``none``: keep the frames as they are.

    Attributes:
        mode: ``center_crop`` | ``keep_aspect`` | ``none``.
        height, width: the output size (``center_crop``) or the box to fit in (``keep_aspect``).
        short_side: ``keep_aspect`` only: the short side's length instead of fitting the box
            (``None``: fit the box).
        multiple: ``keep_aspect`` only: both sides become multiples of it (64 for SD-1.5's UNet).
    """

    mode: ResizeMode = "center_crop"
    height: int = 512
    width: int = 512
    short_side: int | None = None
    multiple: int = 64

    def __post_init__(self) -> None:
        if self.mode not in ("center_crop", "keep_aspect", "none"):
            raise ConfigError(
                f"Unknown resize mode {self.mode!r}: use center_crop, keep_aspect or none (data.resize.mode)."
            )
        for name in ("height", "width", "short_side", "multiple"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.resize.{name} must be positive, got {value}.")
        if self.short_side is not None and self.mode != "keep_aspect":
            raise ConfigError(
                f"data.resize.short_side={self.short_side} applies to data.resize.mode=keep_aspect only "
                f"(mode is {self.mode}, whose size is data.resize.height x data.resize.width): set "
                "data.resize.mode=keep_aspect, or data.resize.short_side=null."
            )

    def plan(self, height: int, width: int) -> ResizePlan:
        """The scale and crop for a frame of ``height x width``."""
        if self.mode == "none":
            return ResizePlan(height, width, height, width, 0, 0, height, width)
        if self.mode == "center_crop":
            scale = max(self.height / height, self.width / width)
            out_h, out_w = self.height, self.width
        else:
            if self.short_side is not None:
                scale = self.short_side / min(height, width)
            else:
                scale = min(self.height / height, self.width / width)
            out_h = _floor_to(round(height * scale), self.multiple)
            out_w = _floor_to(round(width * scale), self.multiple)
        scaled_h = max(out_h, round(height * scale))
        scaled_w = max(out_w, round(width * scale))
        top = (scaled_h - out_h) // 2
        left = (scaled_w - out_w) // 2
        return ResizePlan(height, width, scaled_h, scaled_w, top, left, out_h, out_w)


def _floor_to(value: int, multiple: int) -> int:
    floored = (value // multiple) * multiple
    if floored == 0:
        raise ConfigError(
            f"A side of {value} px is smaller than the required multiple {multiple} (data.resize.multiple): "
            "give a larger data.resize box or short_side."
        )
    return floored


@dataclass(frozen=True)
class ResizePlan:
    """Scale ``in`` -> ``scaled``, then crop ``out`` at ``(top, left)``."""

    in_height: int
    in_width: int
    scaled_height: int
    scaled_width: int
    top: int
    left: int
    out_height: int
    out_width: int

    @property
    def is_identity(self) -> bool:
        return (self.scaled_height, self.scaled_width, self.top, self.left) == (
            self.in_height,
            self.in_width,
            0,
            0,
        ) and (self.out_height, self.out_width) == (self.in_height, self.in_width)

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != (self.in_height, self.in_width):
            raise ValueError(
                f"expected spatial size {(self.in_height, self.in_width)}, got {tuple(x.shape[-2:])}"
            )

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.top : self.top + self.out_height, self.left : self.left + self.out_width]

    def apply_images(self, images: torch.Tensor) -> torch.Tensor:
        """Resize ``(..., C, H, W)`` float images (bilinear with antialiasing), then crop."""
        self._check(images)
        if self.is_identity:
            return images
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:])
        if (self.scaled_height, self.scaled_width) != (self.in_height, self.in_width):
            x = F.interpolate(
                x,
                size=(self.scaled_height, self.scaled_width),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        x = self._crop(x)
        return x.reshape(*lead, *x.shape[-3:])

    def apply_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Resize ``(..., H, W)`` bool masks with the same geometry as the images, then crop.

        The mask is resampled as a coverage fraction (the same antialiased bilinear filter as the
        frames) and thresholded at 0.5, so a mask pixel is on where the object covers at least half of
        the resized pixel.
        """
        self._check(masks)
        if self.is_identity:
            return masks.bool()
        lead = masks.shape[:-2]
        x = masks.reshape(-1, 1, *masks.shape[-2:]).float()
        if (self.scaled_height, self.scaled_width) != (self.in_height, self.in_width):
            x = F.interpolate(
                x,
                size=(self.scaled_height, self.scaled_width),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        x = self._crop(x) >= 0.5
        return x.reshape(*lead, *x.shape[-2:])


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 -> ``(F, 3, H, W)`` float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """``(F, 3, H, W)`` float in [-1, 1] -> ``(F, H, W, 3)`` uint8.

    Raises:
        NumericalError: ``x`` holds NaN or infinite values (they would silently become black pixels).
    """
    check_finite(x, "decoded frames")
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def check_divisible(height: int, width: int, factor: int, what: str = "this UNet") -> None:
    """Raise a :class:`ResolutionError` unless both sides are multiples of ``factor``."""
    if height % factor or width % factor:
        ok_h = max(factor, math.floor(height / factor) * factor)
        ok_w = max(factor, math.floor(width / factor) * factor)
        raise ResolutionError(
            f"Frames are {width}x{height} (WxH) after resizing, but {what} needs both sides to be multiples "
            f"of {factor}. Use e.g. data.resize.height={ok_h} data.resize.width={ok_w}, or "
            f"data.resize.mode=keep_aspect data.resize.multiple={factor}."
        )
