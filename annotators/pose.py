"""Pose condition maps (OpenPose skeletons on black) for the ControlNet openpose models.

Four builders, all producing ``condition_type = "openpose"`` maps of the frames' size:

* :class:`~annotators.dwpose_onnx.DWPoseOnnx` (``annotator=dwpose``, the official VideoGrain default for
  the human clips, hand on, face off): the official DWPose ONNX models through onnxruntime, no mm*
  packages. Multi-person.
* :class:`DWPose` (``annotator=dwpose_mm``): controlnet-aux's ``DWposeDetector``. In controlnet-aux 0.0.10
  it runs on mmpose/mmdet/mmcv, which must be installed; weights are ``det_checkpoint``/``pose_checkpoint``
  (files or URLs; controlnet-aux's defaults are the YOLOX-L and ``dw-ll_ucoco_384`` checkpoints).
* :class:`OpenPose`: controlnet-aux's CMU OpenPose (``body_pose_model.pth``, ``hand_pose_model.pth``,
  ``facenet.pth`` from a local folder or the hub repo ``lllyasviel/Annotators``). Multi-person.
* :class:`MediapipePose`: the weight-free offline fallback. mediapipe 0.10.21 ships BlazePose inside its
  wheel; its 33 landmarks are converted to the OpenPose-18 layout and drawn with
  :func:`annotators.openpose_draw.draw_openpose`. **One person per frame** (the mediapipe pose solution
  tracks a single person). Hands (optional) come from mediapipe's bundled hand model, drawn as
  ControlNet draws OpenPose hands; faces are not supported by this backend.

Frames without a person give an all-black map. BlazePose reports poses on non-person frames (the
DAVIS blackswan gets a confident 33-point "pose" on 11 of 24 frames at mediapipe's defaults), so the
landmark model's pose-presence score is thresholded (``min_presence``; mediapipe calls it
``min_tracking_confidence``) and joints are dropped below ``min_visibility``. The detection rates are
measured in ``benchmarks/bench_pose_offline.py``.

CLI: ``python -m annotators.pose --video clip.mp4 --out clip/openpose [--backend mediapipe]``.
"""

from __future__ import annotations

import argparse
import colorsys
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotators.base import Annotator
from annotators.common import (
    LazyModelAnnotator,
    add_clip_arguments,
    file_stamp,
    module_available,
    read_clip,
    resize_map,
    resolve_device,
    resolve_weight_file,
    write_condition_maps,
)
from annotators.openpose_draw import draw_openpose
from videoedit.errors import ConfigError, ModelLoadError, VideoEditError

logger = logging.getLogger(__name__)

OFFLINE_POSE = "annotator=pose_mediapipe (weight-free, offline)"

# ------------------------------------------------------------------------------- layout conversion

#: BlazePose landmark index of each OpenPose-18 keypoint (``None`` = neck, the shoulders' midpoint).
#: BlazePose: 0 nose, 2/5 left/right eye, 7/8 left/right ear, 11/12 shoulders, 13/14 elbows,
#: 15/16 wrists, 23/24 hips, 25/26 knees, 27/28 ankles (left/right = the person's).
BLAZEPOSE_TO_OPENPOSE: tuple[int | None, ...] = (
    0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7,
)  # fmt: skip


def blazepose_to_openpose(
    landmarks: np.ndarray, height: int, width: int, min_visibility: float = 0.5
) -> np.ndarray:
    """Convert BlazePose landmarks to OpenPose-18 keypoints.

    Args:
        landmarks: ``(33, 3)`` ``(x, y, visibility)`` with ``x, y`` normalised to [0, 1].
        height, width: the frame size in pixels.
        min_visibility: joints below this visibility, or outside the frame, are marked invisible.

    Returns:
        ``(18, 3)`` ``(x, y, visible)`` in pixels (``visible`` is 1.0 or 0.0), as
        :func:`draw_openpose` takes it. The neck is the shoulders' midpoint, visible when both are.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (33, 3):
        raise ValueError(f"expected (33, 3) BlazePose landmarks, got {landmarks.shape}")
    xy = landmarks[:, :2] * np.array([width, height])
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
    ok = (landmarks[:, 2] >= min_visibility) & inside
    out = np.zeros((18, 3))
    for k, src in enumerate(BLAZEPOSE_TO_OPENPOSE):
        if src is None:
            out[k, :2] = (xy[11] + xy[12]) / 2
            out[k, 2] = float(ok[11] and ok[12])
        else:
            out[k, :2] = xy[src]
            out[k, 2] = float(ok[src])
    return out


#: the 20 bones of a 21-point hand (OpenPose and mediapipe share this layout: wrist, then 4 points per
#: finger from thumb to little finger).
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip


def draw_hands(canvas: np.ndarray, hands: Sequence[np.ndarray]) -> np.ndarray:
    """Draw 21-point hands on an RGB canvas the way ControlNet draws OpenPose hands.

    Bones are 2-px lines coloured along the HSV hue circle (bone ``i`` of 20 at hue ``i/20``), joints
    4-px blue discs (sizes scale with the canvas, 512 px reference).

    Args:
        canvas: ``(H, W, 3)`` uint8 RGB, drawn on in place and returned.
        hands: each ``(21, 2)`` pixel coordinates (or ``(21, 3)`` with a visibility column; joints
            with visibility <= 0 or NaN coordinates are skipped).
    """
    scale = min(canvas.shape[:2]) / 512.0
    thickness = max(1, round(2 * scale))
    radius = max(1, round(4 * scale))
    for hand in hands:
        hand = np.asarray(hand, dtype=np.float64)
        ok = np.isfinite(hand[:, :2]).all(1)
        if hand.shape[1] > 2:
            ok &= hand[:, 2] > 0
        for i, (a, b) in enumerate(HAND_EDGES):
            if ok[a] and ok[b]:
                color = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
                pa = (round(hand[a, 0]), round(hand[a, 1]))
                pb = (round(hand[b, 0]), round(hand[b, 1]))
                cv2.line(canvas, pa, pb, color, thickness=thickness)
        for k in range(len(hand)):
            if ok[k]:
                cv2.circle(canvas, (round(hand[k, 0]), round(hand[k, 1])), radius, (0, 0, 255), thickness=-1)
    return canvas


# ---------------------------------------------------------------------------------- mediapipe


def _import_mediapipe():
    try:
        import mediapipe as mp

        _ = mp.solutions.pose
    except Exception as err:  # ImportError, or a build without the legacy solutions
        raise ModelLoadError(
            f"The offline pose annotator needs mediapipe 0.10.21 ({type(err).__name__}: {err}). Install it "
            'with `pip install -c constraints.txt -e ".[pose]" && pip install --no-deps -c constraints.txt '
            "mediapipe==0.10.21` (its metadata pins numpy<2, so it goes in without its dependencies; the "
            '"pose" extra brings those it needs; bash test.sh does this), or use annotator=openpose / '
            "annotator=dwpose with their weights."
        ) from err
    return mp


class MediapipePose(Annotator):
    """Offline OpenPose-style maps from mediapipe's bundled BlazePose (one person per frame).

    Args:
        hand: also draw hands (mediapipe's bundled hand model, at most 2 hands, drawn only on frames
            with a body).
        min_presence: threshold on the landmark model's pose-presence score (mediapipe's
            ``min_tracking_confidence``; its default 0.5 draws skeletons on the DAVIS blackswan; 0.98
            removes them and keeps every person frame of lucia/dance-twirl/tennis: see
            ``benchmarks/README.md``).
        min_visibility: joints below this landmark visibility are not drawn.
        min_detection_confidence: the person detector's score threshold (mediapipe default 0.5).
        tracking: run mediapipe in video mode (detect once, then track, landmarks smoothed over
            time: steadier skeletons); ``False`` detects on every frame independently.
    """

    condition_type = "openpose"

    def __init__(
        self,
        hand: bool = False,
        min_presence: float = 0.98,
        min_visibility: float = 0.5,
        min_detection_confidence: float = 0.5,
        tracking: bool = True,
    ) -> None:
        for name, value in (
            ("min_presence", min_presence),
            ("min_visibility", min_visibility),
            ("min_detection_confidence", min_detection_confidence),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"annotator.{name} must be in [0, 1], got {value}")
        self._mp = _import_mediapipe()
        self.hand = bool(hand)
        self.min_presence = float(min_presence)
        self.min_visibility = float(min_visibility)
        self.min_detection_confidence = float(min_detection_confidence)
        self.tracking = bool(tracking)

    def detect(self, frames: np.ndarray) -> list[dict[str, Any]]:
        """Per frame: ``{"body": (18, 3) OpenPose keypoints in pixels or None, "hands": [(21, 3), ...]}``.

        Args:
            frames: ``(F, H, W, 3)`` uint8 RGB.
        """
        mp = self._mp
        _, height, width, _ = frames.shape
        # model_complexity=1 is the landmark model bundled in the 0.10.21 wheel (0 and 2 download)
        pose = mp.solutions.pose.Pose(
            static_image_mode=not self.tracking,
            model_complexity=1,
            smooth_landmarks=self.tracking,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_presence,
        )
        hands = (
            mp.solutions.hands.Hands(
                static_image_mode=not self.tracking,
                max_num_hands=2,
                model_complexity=1,
                min_detection_confidence=0.5,
            )
            if self.hand
            else None
        )
        results: list[dict[str, Any]] = []
        try:
            for frame in frames:
                image = np.ascontiguousarray(frame)
                found = pose.process(image)
                body = None
                if found.pose_landmarks is not None:
                    lm = np.array([[p.x, p.y, p.visibility] for p in found.pose_landmarks.landmark])
                    body = blazepose_to_openpose(lm, height, width, self.min_visibility)
                    if not body[:, 2].any():
                        body = None
                hand_points = []
                if hands is not None:
                    found_hands = hands.process(image)
                    if body is not None and found_hands.multi_hand_landmarks:
                        for h in found_hands.multi_hand_landmarks:
                            pts = np.array([[p.x * width, p.y * height, 1.0] for p in h.landmark])
                            hand_points.append(pts)
                results.append({"body": body, "hands": hand_points})
        finally:
            pose.close()
            if hands is not None:
                hands.close()
        return results

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        _, height, width, _ = frames.shape
        out = np.zeros_like(frames)
        for f, found in enumerate(self.detect(frames)):
            if found["body"] is None:
                continue
            canvas = draw_openpose(found["body"][None], height, width)
            if found["hands"]:
                canvas = draw_hands(canvas, found["hands"])
            out[f] = canvas
        return out

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "mediapipe": getattr(self._mp, "__version__", "?"),
            "hand": self.hand,
            "min_presence": self.min_presence,
            "min_visibility": self.min_visibility,
            "min_detection_confidence": self.min_detection_confidence,
            "tracking": self.tracking,
        }


#: DWPose's drawing thresholds (controlnet-aux / the official annotator): body keypoints are drawn when
#: score > 0.3, hand/face keypoints are hidden when score < 0.3 (so exactly 0.3 hides a body joint but
#: keeps a hand joint)
DWPOSE_SCORE_THRESHOLD = 0.3


def draw_wholebody(
    candidate: np.ndarray, score: np.ndarray, height: int, width: int, hand: bool = True, face: bool = False
) -> np.ndarray:
    """Draw DWPose's whole-body keypoints as controlnet-aux's / the official annotator's ``draw_pose``.

    Args:
        candidate: ``(P, 134, 2)`` keypoints normalised to [0, 1] (body 0-17 in OpenPose order, feet
            18-23, face 24-91, left hand 92-112, right hand 113-133).
        score: ``(P, 134)`` keypoint scores.
        height, width: the canvas size.
        hand, face: draw hands / face.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    from controlnet_aux.dwpose import util as dw_util

    candidate = np.array(candidate, dtype=np.float64).reshape(-1, 134, 2)
    score = np.array(score, dtype=np.float64).reshape(-1, 134)
    people = len(candidate)
    body = candidate[:, :18].reshape(people * 18, 2)
    body_visible = score[:, :18] > DWPOSE_SCORE_THRESHOLD
    body_index = np.where(body_visible, np.arange(people * 18).reshape(people, 18), -1)
    hidden = candidate.copy()
    hidden[score < DWPOSE_SCORE_THRESHOLD] = -1
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas = dw_util.draw_bodypose(canvas, body, body_index)
    if hand:
        canvas = dw_util.draw_handpose(canvas, np.vstack([hidden[:, 92:113], hidden[:, 113:]]))
    if face:
        canvas = dw_util.draw_facepose(canvas, hidden[:, 24:92])
    return canvas


# -------------------------------------------------------------------------------- controlnet-aux


class OpenPose(LazyModelAnnotator):
    """controlnet-aux's CMU OpenPose (official VideoGrain ``openpose``: body; hands/face by flags).

    Args:
        pretrained_model_or_path: local folder or hub repo holding ``body_pose_model.pth``,
            ``hand_pose_model.pth`` and ``facenet.pth`` (official: ``lllyasviel/Annotators``).
        hand, face: draw hands / face keypoints.
        detect_resolution: the short side the detector runs at (controlnet-aux default 512).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``...
    """

    condition_type = "openpose"
    offline_alternative = OFFLINE_POSE
    FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")

    def __init__(
        self,
        pretrained_model_or_path: str = "lllyasviel/Annotators",
        hand: bool = True,
        face: bool = False,
        detect_resolution: int = 512,
        device: str = "auto",
    ) -> None:
        self.pretrained_model_or_path = str(pretrained_model_or_path)
        self.hand, self.face = bool(hand), bool(face)
        self.detect_resolution = int(detect_resolution)
        self.device = resolve_device(device)
        alternative = f"{OFFLINE_POSE}, or annotator=precomputed with OpenPose maps made elsewhere"
        self.files = [
            resolve_weight_file(self.pretrained_model_or_path, name, "OpenPose annotator", alternative)
            for name in self.FILES
        ]

    def _build(self) -> Any:
        from controlnet_aux.open_pose import Body, Face, Hand, OpenposeDetector

        body, hand, face = (str(p) for p in self.files)
        return OpenposeDetector(Body(body), Hand(hand), Face(face)).to(self.device)

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        _, height, width, _ = frames.shape
        out = []
        for frame in frames:
            pose_map = self.detector(
                frame,
                detect_resolution=self.detect_resolution,
                image_resolution=min(height, width),
                include_body=True,
                include_hand=self.hand,
                include_face=self.face,
                output_type="np",
            )
            out.append(resize_map(np.asarray(pose_map), height, width))
        return np.stack(out)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "weights": [file_stamp(p) for p in self.files],
            "hand": self.hand,
            "face": self.face,
            "detect_resolution": self.detect_resolution,
        }


#: controlnet-aux 0.0.10's default DWPose checkpoints (``controlnet_aux/dwpose/wholebody.py``): YOLOX-L
#: person detector and the DWPose-L whole-body model
DWPOSE_DET_CHECKPOINT = (
    "https://download.openmmlab.com/mmdetection/v2.0/yolox/yolox_l_8x8_300e_coco/"
    "yolox_l_8x8_300e_coco_20211126_140236-d3bd2b23.pth"
)
DWPOSE_POSE_CHECKPOINT = "https://huggingface.co/wanghaofan/dw-ll_ucoco_384/resolve/main/dw-ll_ucoco_384.pth"


def cached_checkpoint(url: str) -> Path | None:
    """The local copy of a checkpoint URL: torch hub's ``<hub dir>/checkpoints/<file name>`` (where
    mmengine/torch.hub download it), or, for ``huggingface.co/<repo>/resolve/<rev>/<file>`` URLs, the
    Hugging Face cache. ``None`` when it has not been downloaded."""
    from urllib.parse import urlparse

    import torch

    parsed = urlparse(url)
    name = Path(parsed.path).name
    hub = Path(torch.hub.get_dir()) / "checkpoints" / name
    if hub.is_file():
        return hub
    parts = parsed.path.strip("/").split("/")
    if parsed.netloc.endswith("huggingface.co") and len(parts) >= 5 and parts[2] == "resolve":
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(
                "/".join(parts[:2]), "/".join(parts[4:]), revision=parts[3] if parts[3] != "main" else None
            )
        except Exception:
            found = None
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


class DWPose(LazyModelAnnotator):
    """controlnet-aux's DWPose (official VideoGrain ``dwpose``: body always, hands/face by flags,
    body keypoints with score <= 0.3 and hand/face keypoints with score < 0.3 dropped).

    controlnet-aux 0.0.10 runs DWPose on mmpose + mmdet + mmcv (not dependencies of this project:
    ``pip install -U openmim && mim install mmengine "mmcv>=2.0.1" "mmdet>=3.1.0" "mmpose>=1.1.0"``).
    The official VideoGrain code runs the same networks as ONNX files instead.

    Args:
        hand, face: draw hands / face keypoints (official instance configs: hand on, face off).
        det_config, pose_config: mmdet/mmpose config files (``None``: the ones controlnet-aux ships).
        det_checkpoint, pose_checkpoint: local files or URLs (``None``: controlnet-aux's defaults,
            YOLOX-L from OpenMMLab and ``dw-ll_ucoco_384.pth``). URLs must already be downloaded (torch
            hub's ``checkpoints`` folder, or the Hugging Face cache for huggingface.co URLs): nothing is
            downloaded, so a missing file fails here, before the diffusion model loads.
        detect_resolution: the short side the detector runs at.
        device: ``auto``, ``cpu``, ``cuda``...
    """

    condition_type = "openpose"
    offline_alternative = OFFLINE_POSE
    SCORE_THRESHOLD = DWPOSE_SCORE_THRESHOLD

    def __init__(
        self,
        hand: bool = True,
        face: bool = False,
        det_config: str | None = None,
        det_checkpoint: str | None = None,
        pose_config: str | None = None,
        pose_checkpoint: str | None = None,
        detect_resolution: int = 512,
        device: str = "auto",
    ) -> None:
        missing = [m for m in ("mmcv", "mmdet", "mmpose") if not module_available(m)]
        if missing:
            raise ModelLoadError(
                f"The DWPose annotator (controlnet-aux) needs {', '.join(missing)}, which are not installed "
                '(`pip install -U openmim && mim install mmengine "mmcv>=2.0.1" "mmdet>=3.1.0" '
                '"mmpose>=1.1.0"`). Alternatives: annotator=openpose (weights lllyasviel/Annotators), '
                f"or {OFFLINE_POSE}."
            )
        for name, value in (
            ("det_config", det_config),
            ("det_checkpoint", det_checkpoint),
            ("pose_config", pose_config),
            ("pose_checkpoint", pose_checkpoint),
        ):
            if value and "://" not in value and not Path(value).expanduser().is_file():
                raise ModelLoadError(
                    f"DWPose annotator: {name}={value} is not a file. Give an existing file or a URL, "
                    f"or use {OFFLINE_POSE}."
                )
        self.hand, self.face = bool(hand), bool(face)
        self.det_config, self.pose_config = det_config, pose_config
        self.det_checkpoint = self._local_checkpoint("det_checkpoint", det_checkpoint, DWPOSE_DET_CHECKPOINT)
        self.pose_checkpoint = self._local_checkpoint(
            "pose_checkpoint", pose_checkpoint, DWPOSE_POSE_CHECKPOINT
        )
        self.detect_resolution = int(detect_resolution)
        self.device = resolve_device(device)

    @staticmethod
    def _local_checkpoint(name: str, value: str | None, default_url: str) -> str:
        """A local file for a checkpoint argument (a file, a downloaded URL, or the default's download)."""
        if value and "://" not in value:
            return str(Path(value).expanduser())
        url = value or default_url
        found = cached_checkpoint(url)
        if found is None:
            import torch

            target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
            raise ModelLoadError(
                f"DWPose annotator: the {name} {url} is not downloaded (looked for {target}). Download it "
                f"there, or anywhere and set annotator.{name}=<file>; or use {OFFLINE_POSE}."
            )
        return str(found)

    def _build(self) -> Any:
        from controlnet_aux.dwpose import DWposeDetector

        return DWposeDetector(
            self.det_config, self.det_checkpoint, self.pose_config, self.pose_checkpoint, device=self.device
        )

    def draw(self, candidate: np.ndarray, subset: np.ndarray, height: int, width: int) -> np.ndarray:
        """Draw DWPose's whole-body output like the official annotator (:func:`draw_wholebody`)."""
        return draw_wholebody(candidate, subset, height, width, self.hand, self.face)

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        import torch
        from controlnet_aux.util import resize_image

        _, height, width, _ = frames.shape
        out = []
        for frame in frames:
            image = resize_image(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), self.detect_resolution)
            h, w = image.shape[:2]
            with torch.no_grad():
                candidate, subset = self.detector.pose_estimation(image)
            candidate = np.asarray(candidate, dtype=np.float64) / np.array([w, h])
            out.append(resize_map(self.draw(candidate, subset, h, w), height, width))
        return np.stack(out)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "hand": self.hand,
            "face": self.face,
            "det": [file_stamp(self.det_config), file_stamp(self.det_checkpoint)],
            "pose": [file_stamp(self.pose_config), file_stamp(self.pose_checkpoint)],
            "detect_resolution": self.detect_resolution,
        }


# ------------------------------------------------------------------------------------------- CLI

BACKENDS = ("mediapipe", "openpose", "dwpose", "dwpose_mm")


def build_pose_annotator(backend: str, hand: bool = False, face: bool = False, weights: str | None = None):
    """The pose annotator of a backend name (``mediapipe``, ``openpose``, ``dwpose`` (ONNX),
    ``dwpose_mm`` (controlnet-aux on mmpose))."""
    if backend == "mediapipe":
        if face:
            raise ConfigError(
                "the mediapipe pose backend draws no faces: drop --face or pick openpose/dwpose"
            )
        return MediapipePose(hand=hand)
    if backend == "openpose":
        return OpenPose(weights or "lllyasviel/Annotators", hand=hand, face=face)
    if backend == "dwpose":
        from annotators.dwpose_onnx import DWPOSE_ONNX_REPO, DWPoseOnnx

        return DWPoseOnnx(weights or DWPOSE_ONNX_REPO, hand=hand, face=face)
    if backend == "dwpose_mm":
        return DWPose(hand=hand, face=face, pose_checkpoint=weights)
    raise ConfigError(f"unknown pose backend {backend!r}: pick one of {', '.join(BACKENDS)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m annotators.pose",
        description="Write OpenPose condition maps (one PNG per frame + an mp4 preview) for a clip.",
    )
    add_clip_arguments(parser, sampling=False)
    parser.add_argument("--out", required=True, help="output folder (then data.conditions.openpose=<out>)")
    parser.add_argument("--backend", choices=BACKENDS, default="mediapipe")
    parser.add_argument("--hand", action="store_true", help="draw hands")
    parser.add_argument("--face", action="store_true", help="draw faces (openpose/dwpose)")
    parser.add_argument(
        "--weights",
        default=None,
        help="openpose/dwpose: folder or hub repo of the weights; dwpose_mm: the pose checkpoint",
    )
    args = parser.parse_args(argv)
    annotator = build_pose_annotator(args.backend, args.hand, args.face, args.weights)
    clip = read_clip(args)
    maps = annotator(clip.frames, clip.indices)
    out = write_condition_maps(args.out, maps, clip.indices, clip.fps)
    print(f"wrote {len(maps)} pose maps to {out}/ (preview {out}.mp4)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except VideoEditError as err:  # a clear message, no traceback
        raise SystemExit(f"error: {err}") from None
