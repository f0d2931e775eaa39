"""A clip the project draws itself, so the quickstart and the tests need no data files.

Two jogging figures (the regions of the ``instance_edit`` experiment: a left figure, a right figure and
the background) move differently over a textured, slowly panning park: the left one runs to the
right, the right one runs to the left while coming closer. Because we draw it, we know everything
exactly: per-region masks (disjoint, covering the frame), OpenPose skeleton maps drawn from the
figures' joints, a depth map, and the true background motion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from annotators.openpose_draw import draw_openpose
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError
from videoedit.io.transforms import frames_to_tensor

_SKIN = (222, 184, 152)
_PALETTES = {  # part -> RGB, per figure
    "left": {"shirt": (120, 28, 40), "pants": (105, 118, 108), "skin": _SKIN},
    "right": {"shirt": (128, 128, 134), "pants": (32, 32, 36), "skin": (214, 170, 140)},
}


@dataclass(frozen=True)
class _Figure:
    name: str
    x0: float  # hip x at frame 0, as a fraction of the width
    y0: float  # hip y at frame 0, as a fraction of the height
    vx: float  # horizontal speed, fraction of the width per frame
    scale0: float  # body height as a fraction of the frame height
    growth: float  # relative scale change per frame (coming closer > 0)
    phase: float  # gait phase offset
    depth: int  # depth-map value (near = bright)


_FIGURES = (
    _Figure("left", x0=0.27, y0=0.60, vx=+0.012, scale0=0.62, growth=0.000, phase=0.0, depth=190),
    _Figure("right", x0=0.74, y0=0.63, vx=-0.008, scale0=0.58, growth=0.012, phase=1.7, depth=225),
)


def _joints(fig: _Figure, t: int, height: int, width: int) -> np.ndarray:
    """OpenPose-18 keypoints ``(18, 3)`` of a figure at frame ``t``: ``(x, y, visible)``."""
    s = fig.scale0 * (1 + fig.growth * t) * height
    hx = (fig.x0 + fig.vx * t) * width
    phase = fig.phase + 0.9 * t
    hy = fig.y0 * height - 0.015 * s * abs(math.sin(phase))  # bob
    neck = np.array([hx, hy - 0.30 * s])
    pts = np.zeros((18, 2))
    pts[1] = neck
    pts[0] = neck + [0, -0.10 * s]
    pts[14], pts[15] = pts[0] + [-0.025 * s, -0.02 * s], pts[0] + [0.025 * s, -0.02 * s]
    pts[16], pts[17] = pts[0] + [-0.05 * s, -0.005 * s], pts[0] + [0.05 * s, -0.005 * s]
    pts[2], pts[5] = neck + [-0.12 * s, 0.02 * s], neck + [0.12 * s, 0.02 * s]
    pts[8], pts[11] = np.array([hx - 0.07 * s, hy]), np.array([hx + 0.07 * s, hy])
    swing = 0.55 * math.sin(phase)
    for side, (sh, el, wr, hip, kn, an) in ((-1, (2, 3, 4, 8, 9, 10)), (1, (5, 6, 7, 11, 12, 13))):
        a = side * swing  # arms and legs swing in opposite phase on each side
        pts[el] = pts[sh] + 0.16 * s * np.array([math.sin(a) + side * 0.25, math.cos(a)])
        pts[wr] = pts[el] + 0.15 * s * np.array([math.sin(a + 1.2 * side * 0 + 0.9), math.cos(a + 0.9) * 0.6])
        leg = -a * 0.8
        pts[kn] = pts[hip] + 0.24 * s * np.array([math.sin(leg), math.cos(leg)])
        bend = leg - 0.4 * max(0.0, math.sin(phase * side))
        pts[an] = pts[kn] + 0.24 * s * np.array([math.sin(bend), math.cos(bend)])
    return np.concatenate([pts, np.ones((18, 1))], axis=1)


def _draw_figure(labels: np.ndarray, joints: np.ndarray, scale: float) -> None:
    """Draw part labels (1 shirt, 2 pants, 3 skin) of one figure into ``labels`` (H, W) uint8."""
    p = joints[:, :2].round().astype(np.int32)
    limb = max(2, round(0.055 * scale))
    torso = np.array([p[2], p[5], p[11], p[8]])
    cv2.fillConvexPoly(labels, torso, 1, lineType=cv2.LINE_8)
    for a, b in ((8, 9), (9, 10), (11, 12), (12, 13)):
        cv2.line(labels, tuple(p[a]), tuple(p[b]), 2, thickness=round(limb * 1.3), lineType=cv2.LINE_8)
    for a, b in ((2, 3), (5, 6)):
        cv2.line(labels, tuple(p[a]), tuple(p[b]), 1, thickness=limb, lineType=cv2.LINE_8)
    for a, b in ((3, 4), (6, 7)):
        cv2.line(
            labels, tuple(p[a]), tuple(p[b]), 3, thickness=max(2, round(limb * 0.8)), lineType=cv2.LINE_8
        )
    cv2.line(labels, tuple(p[1]), tuple(p[0]), 3, thickness=limb, lineType=cv2.LINE_8)
    cv2.circle(labels, tuple(p[0]), max(3, round(0.075 * scale)), 3, thickness=-1, lineType=cv2.LINE_8)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled with bicubic interpolation."""
    grid = rng.random((max(2, height // cells), max(2, width // cells))).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def _background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A park panorama ``(H, W, 3)`` uint8 and its depth ``(H, W)`` uint8."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    fine = _smooth_noise(rng, height, width, 3)
    coarse = _smooth_noise(rng, height, width, 16)
    img = np.zeros((height, width, 3), np.float32)
    sky = np.array([200, 222, 240], np.float32) * (0.9 + 0.1 * coarse[..., None])
    foliage = np.stack([40 + 90 * coarse, 90 + 100 * fine, 30 + 50 * coarse], -1)
    ground = np.stack([110 + 60 * fine, 95 + 60 * coarse, 50 + 30 * fine], -1)
    horizon, treeline = 0.18, 0.62
    img[:] = ground
    img[(y < treeline)[:, 0]] = foliage[(y < treeline)[:, 0]]
    img[(y < horizon)[:, 0]] = sky[(y < horizon)[:, 0]]
    for x in rng.integers(0, width, size=max(3, width // 40)):  # trunks
        w = int(rng.integers(3, 7))
        img[int(horizon * height) : int(treeline * height), x : x + w] = (70, 50, 35)
    depth = np.where(y < treeline, 45.0, 45.0 + 120.0 * (y - treeline) / (1 - treeline)) * np.ones((1, width))
    return img.clip(0, 255).astype(np.uint8), depth.astype(np.uint8)


def render_two_figures(
    num_frames: int = 8, height: int = 256, width: int = 256, seed: int = 0, pan: float = 1.0
) -> dict[str, np.ndarray]:
    """Render the clip.

    Returns:
        ``frames (F, H, W, 3)`` uint8, ``masks (F, 3, H, W)`` bool for (left figure, right figure,
        background), ``openpose (F, H, W, 3)`` and ``depth (F, H, W, 3)`` uint8 condition maps, and
        ``keypoints (F, 2, 18, 3)``.
    """
    rng = np.random.default_rng(seed)
    pan_px = pan * width / 256
    pano_w = width + math.ceil(pan_px * num_frames) + 1
    pano, pano_depth = _background(rng, height, pano_w)
    shirt_texture = _smooth_noise(rng, height, width, 2)
    frames, masks, poses, depths, keypoints = [], [], [], [], []
    for t in range(num_frames):
        x = round(pan_px * t)  # the camera pans right: the background moves left
        frame = pano[:, x : x + width].astype(np.float32)
        depth = pano_depth[:, x : x + width].astype(np.float32)
        owner = np.zeros((height, width), np.uint8)  # 0 background, 1 left, 2 right
        kps = []
        for k, fig in enumerate(_FIGURES, start=1):
            joints = _joints(fig, t, height, width)
            labels = np.zeros((height, width), np.uint8)
            _draw_figure(labels, joints, fig.scale0 * (1 + fig.growth * t) * height)
            palette = _PALETTES[fig.name]
            for part, value in (("shirt", 1), ("pants", 2), ("skin", 3)):
                sel = labels == value
                shade = 0.8 + 0.4 * shirt_texture[sel, None] if part != "skin" else 1.0
                frame[sel] = np.array(palette[part], np.float32) * shade
            depth[labels > 0] = fig.depth
            owner[labels > 0] = k  # the right figure is drawn last: it occludes the left one
            kps.append(joints)
        frames.append(frame.clip(0, 255).astype(np.uint8))
        masks.append(np.stack([owner == 1, owner == 2, owner == 0]))
        kps_arr = np.stack(kps)
        poses.append(draw_openpose(kps_arr, height, width))
        depths.append(np.repeat(depth.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1))
        keypoints.append(kps_arr)
    return {
        "frames": np.stack(frames),
        "masks": np.stack(masks),
        "openpose": np.stack(poses),
        "depth": np.stack(depths),
        "keypoints": np.stack(keypoints),
    }


class TwoFiguresClip:
    """``data=two_figures``: the generated clip (see the module docstring).

    Args:
        num_frames, height, width: clip size (sides must suit the model: multiples of 64 for SD).
        seed: texture seed.
        pan: background pan in pixels per frame at 256 px width.
        prompt: source prompt.
        regions: names of (left figure, right figure, background), matching the experiment's regions.
        fps: frame rate written to the result tree.
    """

    def __init__(
        self,
        num_frames: int = 8,
        height: int = 256,
        width: int = 256,
        seed: int = 0,
        pan: float = 1.0,
        prompt: str = "two men jogging in a park",
        regions: Sequence[str] = ("left_man", "right_man", "trees"),
        fps: float = 8.0,
        name: str = "two_figures",
    ) -> None:
        if len(regions) != 3:
            raise ConfigError(
                f"two_figures has exactly 3 regions (left figure, right figure, background); got {list(regions)}."
            )
        if num_frames < 1 or height < 64 or width < 64:
            raise ConfigError(
                f"two_figures needs num_frames >= 1 and sides >= 64, got {num_frames}, {height}x{width}."
            )
        self.num_frames, self.height, self.width = num_frames, height, width
        self.seed, self.pan, self.prompt, self.fps, self.name = seed, pan, prompt, fps, name
        self.regions = list(regions)

    def load(self) -> SourceVideo:
        clip = render_two_figures(self.num_frames, self.height, self.width, self.seed, self.pan)
        return SourceVideo(
            frames=frames_to_tensor(clip["frames"]),
            prompt=self.prompt,
            fps=self.fps,
            name=self.name,
            indices=list(range(self.num_frames)),
            masks=torch.from_numpy(clip["masks"]),
            regions=self.regions,
            conditions={"openpose": clip["openpose"], "depth": clip["depth"]},
        )
