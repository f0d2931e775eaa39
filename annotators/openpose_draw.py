"""Drawing body keypoints the way the ControlNet OpenPose models were trained on.

The 18-keypoint OpenPose (COCO-18) layout: 0 nose, 1 neck, 2 right shoulder, 3 right elbow, 4 right
wrist, 5 left shoulder, 6 left elbow, 7 left wrist, 8 right hip, 9 right knee, 10 right ankle, 11 left
hip, 12 left knee, 13 left ankle, 14 right eye, 15 left eye, 16 right ear, 17 left ear.
Limbs are filled ellipses (4 px half-width at 512 px) in the standard 18-colour palette, the limb
layer is scaled to 60% brightness, then joints are drawn on top as 4 px discs in the same palette: the
drawing of ControlNet 1.1's annotator and controlnet-aux (what the v1.1 OpenPose models were trained on).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

NUM_KEYPOINTS = 18

#: (start, end) keypoint pairs of the drawn limbs (17 limbs; ear-shoulder links are not drawn).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

#: RGB colour of each limb / keypoint index.
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def draw_openpose(
    keypoints: np.ndarray, height: int, width: int, stick_width: int | None = None
) -> np.ndarray:
    """Draw people on a black canvas.

    Args:
        keypoints: ``(P, 18, 3)`` per person ``(x, y, visible)`` in pixels; joints with ``visible <= 0``
            (or NaN coordinates) are not drawn, nor the limbs touching them.
        height, width: canvas size.
        stick_width: limb half-width in pixels (default scales 4 px at 512 with the canvas).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    scale = min(height, width) / 512.0
    stick = stick_width if stick_width is not None else max(1, round(4 * scale))
    radius = max(1, round(4 * scale))
    ok = (keypoints[..., 2] > 0) & np.isfinite(keypoints[..., :2]).all(-1)
    for person, valid in zip(keypoints, ok):  # limbs of every person first, at full colour
        for i, (a, b) in enumerate(LIMBS):
            if not (valid[a] and valid[b]):
                continue
            (xa, ya), (xb, yb) = person[a, :2], person[b, :2]
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            poly = cv2.ellipse2Poly(
                (round((xa + xb) / 2), round((ya + yb) / 2)),
                (round(length / 2), stick),
                round(angle),
                0,
                360,
                1,
            )
            cv2.fillConvexPoly(canvas, poly, COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)  # limbs at 60% (ControlNet 1.1 / controlnet-aux drawing)
    for person, valid in zip(keypoints, ok):  # then the joints on top, at full colour
        for k in range(NUM_KEYPOINTS):
            if valid[k]:
                cv2.circle(
                    canvas, (round(person[k, 0]), round(person[k, 1])), radius, COLORS[k], thickness=-1
                )
    return canvas
