"""DWPose through its official ONNX models and onnxruntime: no mmcv/mmdet/mmpose.

The official VideoGrain annotator (ControlNet-v1-1-nightly's ``annotator/dwpose``, DWPose by Yang et al.,
ICCV-W 2023) runs two ONNX files with onnxruntime: ``yolox_l.onnx`` (a YOLOX-L person detector) and
``dw-ll_ucoco_384.onnx`` (DWPose-L, 133 COCO-WholeBody keypoints as SimCC distributions), downloaded from
the hub repo ``sxela/dwpose_ckpts`` (the authors' ``yzd-v/DWPose`` holds the same files). This module
implements the same pipeline (our code, following the official pre/post-processing):

1. detector: the frame is scaled by ``r = min(S / H, S / W)`` into an ``S x S`` canvas (top-left, grey 114
   padding, no normalisation; ``S`` is the model's input size, 640), YOLOX's grid outputs are decoded
   (strides 8/16/32, ``exp`` sizes), ``score = objectness x class``, class-aware NMS (IoU 0.45, score
   0.1), then persons (class 0) with score > 0.3 are kept. No person: the whole frame is one box (official);
2. pose: each box is padded by 1.25, widened to the model's aspect ratio (``w/h`` of its input, 288/384)
   and warped into the input by a similarity transform; pixels are normalised with ImageNet's mean/std;
   the SimCC outputs are decoded by argmax (split ratio 2), the score of a keypoint is the smaller of its
   two maxima (keypoints with score <= 0 get the location -1), and mapped back to the frame;
3. OpenPose layout: the neck is the shoulders' mean (visible when both shoulders score > 0.3), the 17
   COCO body keypoints are reordered into OpenPose-18, and the maps are drawn as controlnet-aux / the
   official annotator draw them (:func:`annotators.pose.draw_wholebody`: body keypoints above 0.3, hands
   and face, if enabled, at scores >= 0.3).

Frames go in as given (RGB, at the working size), as the official ``get_control`` passes them.

Files come from a local folder, file paths, or a hub repo (``pretrained_model_or_path``), resolved when
the annotator is built, so missing weights fail before the diffusion model loads. On CUDA, install
``onnxruntime-gpu`` instead of ``onnxruntime`` for the ``CUDAExecutionProvider``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotators.common import LazyModelAnnotator, file_stamp, module_available, resolve_weight_file
from annotators.pose import OFFLINE_POSE, draw_wholebody
from videoedit.errors import ModelLoadError

logger = logging.getLogger(__name__)

#: the official VideoGrain annotator's download location (ControlNet-v1-1-nightly annotator/dwpose)
DWPOSE_ONNX_REPO = "sxela/dwpose_ckpts"

# official pre/post-processing constants (annotator/dwpose/onnxdet.py, onnxpose.py, wholebody.py)
DET_PAD_VALUE = 114
DET_STRIDES = (8, 16, 32)
DET_NMS_IOU = 0.45
DET_SCORE_THRESHOLD = 0.1  # before NMS
DET_PERSON_THRESHOLD = 0.3  # persons kept after NMS
POSE_BOX_PADDING = 1.25
POSE_MEAN = np.array([123.675, 116.28, 103.53])
POSE_STD = np.array([58.395, 57.12, 57.375])
SIMCC_SPLIT_RATIO = 2.0
NECK_THRESHOLD = 0.3

#: COCO-17 body keypoint feeding each OpenPose-18 keypoint (``None`` = the neck: shoulders' mean)
COCO_TO_OPENPOSE: tuple[int | None, ...] = (
    0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3,
)  # fmt: skip


# ------------------------------------------------------------------------------------- detector


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The detector's input: ``image (H, W, 3)`` scaled by ``r = min(h/H, w/W)`` into the top-left of a
    ``size = (h, w)`` canvas of grey 114. Returns ``(1, 3, h, w)`` float32 (0-255, not normalised), r."""
    canvas = np.full((*size, 3), DET_PAD_VALUE, dtype=np.uint8)
    r = min(size[0] / image.shape[0], size[1] / image.shape[1])
    new_w, new_h = int(image.shape[1] * r), int(image.shape[0] * r)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), r


def decode_yolox(raw: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX grid outputs -> boxes and class scores in input pixels.

    Args:
        raw: ``(A, 5 + C)``: per anchor ``(dx, dy, log w, log h, objectness, class scores...)`` with
            anchors ordered stride 8, 16, 32, row-major within each grid.
        size: the input ``(h, w)``.

    Returns:
        ``(A, 4)`` boxes ``x0, y0, x1, y1`` and ``(A, C)`` scores ``objectness x class``.
    """
    grids, strides = [], []
    for stride in DET_STRIDES:
        gh, gw = size[0] // stride, size[1] // stride
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((gh * gw, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    if len(grid) != len(raw):
        raise ModelLoadError(
            f"DWPose detector: {len(raw)} outputs for a {size[0]}x{size[1]} input, expected {len(grid)} "
            "(YOLOX strides 8/16/32): is det_model a YOLOX ONNX export?"
        )
    centre = (raw[:, :2] + grid) * stride
    wh = np.exp(raw[:, 2:4]) * stride
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1)
    return boxes, raw[:, 4:5] * raw[:, 5:]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression (areas with the official ``+1`` pixel convention).

    Returns the kept indices, best score first.
    """
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


def person_boxes(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Class-aware NMS over every class, then the persons (class 0) above the official threshold.

    Args:
        boxes: ``(A, 4)`` in frame pixels; scores: ``(A, C)``.

    Returns:
        ``(P, 4)`` person boxes, best first.
    """
    kept = []
    for cls in range(scores.shape[1]):
        valid = scores[:, cls] > DET_SCORE_THRESHOLD
        if not valid.any():
            continue
        b, s = boxes[valid], scores[valid, cls]
        for i in nms(b, s, DET_NMS_IOU):
            kept.append((cls, float(s[i]), b[i]))
    people = [box for cls, score, box in kept if cls == 0 and score > DET_PERSON_THRESHOLD]
    return np.array(people, dtype=np.float64).reshape(-1, 4)


# ----------------------------------------------------------------------------------------- pose


def box_to_center_scale(box: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """``(x0, y0, x1, y1)`` -> centre and size ``(w, h)``, padded by 1.25 and widened to ``aspect = w/h``."""
    box = np.asarray(box, dtype=np.float64)
    center = (box[:2] + box[2:]) / 2
    w, h = (box[2:] - box[:2]) * POSE_BOX_PADDING
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    return center, scale


def crop_for_pose(
    image: np.ndarray, center: np.ndarray, scale: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """Warp the box ``center, scale (w, h)`` of ``image (H, W, 3)`` into the pose input ``size = (w, h)``:
    a similarity transform (factor ``size_w / scale_w``, box centre to input centre), bilinear.
    Returns ``(1, 3, h, w)`` float32 normalised with ImageNet's mean/std."""
    s = size[0] / scale[0]
    matrix = np.array(
        [[s, 0.0, size[0] / 2 - s * center[0]], [0.0, s, size[1] / 2 - s * center[1]]], dtype=np.float64
    )
    crop = cv2.warpAffine(image, matrix, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)
    x = (crop.astype(np.float64) - POSE_MEAN) / POSE_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimCC distributions ``(K, Wx)``, ``(K, Wy)`` -> keypoints ``(K, 2)`` in input pixels and scores ``(K,)``.

    The location is the argmax of each axis divided by the split ratio (2); the score the smaller of
    the two maxima; keypoints with score <= 0 are placed at ``-1 / 2`` (the official convention)."""
    locs = np.stack([simcc_x.argmax(1), simcc_y.argmax(1)], 1).astype(np.float64)
    scores = np.minimum(simcc_x.max(1), simcc_y.max(1)).astype(np.float64)
    locs[scores <= 0] = -1
    return locs / SIMCC_SPLIT_RATIO, scores


def coco_wholebody_to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 COCO-WholeBody keypoints -> 134 with the OpenPose-18 body first (official ``Wholebody``).

    Args:
        keypoints: ``(P, 133, 2)``; scores: ``(P, 133)``.

    Returns:
        ``(P, 134, 2)`` and ``(P, 134)``: OpenPose-18 body (the neck = shoulders' mean, score 1 when
        both shoulders score > 0.3, else 0), feet 18-23, face 24-91, left hand 92-112, right hand 113-133.
    """
    neck = keypoints[:, [5, 6]].mean(1)
    neck_score = ((scores[:, 5] > NECK_THRESHOLD) & (scores[:, 6] > NECK_THRESHOLD)).astype(np.float64)
    body_xy = np.stack([neck if k is None else keypoints[:, k] for k in COCO_TO_OPENPOSE], 1)
    body_s = np.stack([neck_score if k is None else scores[:, k] for k in COCO_TO_OPENPOSE], 1)
    return (
        np.concatenate([body_xy, keypoints[:, 17:]], 1),
        np.concatenate([body_s, scores[:, 17:]], 1),
    )


# ------------------------------------------------------------------------------------ annotator


def onnx_providers(device: str) -> list[str]:
    """onnxruntime providers for ``device``: CUDA first when asked for and available, else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning(
            "DWPose on %s: onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); using the CPU",
            device,
        )
    return ["CPUExecutionProvider"]


def _input_size(session, default: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` of an NCHW model input (``default`` where the export has dynamic sides)."""
    shape = session.get_inputs()[0].shape
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape[2:4]]
    return (dims[0] or default[0], dims[1] or default[1])


class DWPoseOnnx(LazyModelAnnotator):
    """DWPose (YOLOX-L + DWPose-L) through the official ONNX models: see the module docstring.

    Args:
        pretrained_model_or_path: a local folder holding both files, or a hub repo (official
            ``sxela/dwpose_ckpts``; the authors' ``yzd-v/DWPose`` has the same files).
        det_model, pose_model: file names in that folder/repo, or paths of the files.
        hand, face: draw hands / face keypoints (official instance configs: hand on, face off).
        device: ``auto`` (CUDA when torch sees it and onnxruntime has its provider), ``cpu``, ``cuda``.
    """

    condition_type = "openpose"
    offline_alternative = OFFLINE_POSE

    def __init__(
        self,
        pretrained_model_or_path: str = DWPOSE_ONNX_REPO,
        det_model: str = "yolox_l.onnx",
        pose_model: str = "dw-ll_ucoco_384.onnx",
        hand: bool = True,
        face: bool = False,
        device: str = "auto",
    ) -> None:
        from annotators.common import resolve_device

        if not module_available("onnxruntime"):
            raise ModelLoadError(
                "The DWPose annotator needs onnxruntime (`pip install onnxruntime`, or onnxruntime-gpu on "
                f"CUDA; it is a dependency of videoedit). Or use {OFFLINE_POSE}."
            )
        self.pretrained_model_or_path = str(pretrained_model_or_path)
        alternative = f"{OFFLINE_POSE}, or annotator=precomputed with OpenPose maps made elsewhere"
        self.files = [self._resolve(name, alternative) for name in (str(det_model), str(pose_model))]
        self.hand, self.face = bool(hand), bool(face)
        self.device = resolve_device(device)

    def _resolve(self, name: str, alternative: str) -> Path:
        given = Path(name).expanduser()
        if given.is_absolute() or given.is_file():
            if not given.is_file():
                raise ModelLoadError(
                    f"DWPose annotator: {given} is not a file. Give the ONNX file, or use {alternative}."
                )
            return given
        return resolve_weight_file(self.pretrained_model_or_path, name, "DWPose annotator", alternative)

    def _build(self) -> Any:
        import onnxruntime as ort

        providers = onnx_providers(self.device)
        return tuple(ort.InferenceSession(str(path), providers=providers) for path in self.files)

    # ------------------------------------------------------------------ the two networks
    def detect_people(self, image: np.ndarray) -> np.ndarray:
        """``(P, 4)`` person boxes in pixels of ``image (H, W, 3)`` uint8 (the whole frame if none)."""
        session = self.detector[0]
        size = _input_size(session, (640, 640))
        x, r = letterbox(image, size)
        raw = session.run(None, {session.get_inputs()[0].name: x})[0]
        boxes, scores = decode_yolox(np.asarray(raw[0], dtype=np.float64), size)
        people = person_boxes(boxes / r, scores)
        if not len(people):  # official: the pose model then runs on the whole frame
            people = np.array([[0.0, 0.0, image.shape[1], image.shape[0]]])
        return people

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """133 keypoints ``(P, 133, 2)`` in pixels and scores ``(P, 133)`` for each box."""
        session = self.detector[1]
        h, w = _input_size(session, (384, 288))
        name = session.get_inputs()[0].name
        points, scores = [], []
        for box in boxes:
            center, scale = box_to_center_scale(box, w / h)
            simcc_x, simcc_y = session.run(None, {name: crop_for_pose(image, center, scale, (w, h))})[:2]
            locs, score = decode_simcc(np.asarray(simcc_x[0]), np.asarray(simcc_y[0]))
            points.append(locs / np.array([w, h]) * scale + center - scale / 2)
            scores.append(score)
        return np.stack(points), np.stack(scores)

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ``(H, W, 3)`` uint8 -> OpenPose-ordered whole-body keypoints ``(P, 134, 2)`` in pixels
        and their scores ``(P, 134)``."""
        boxes = self.detect_people(frame)
        return coco_wholebody_to_openpose(*self.estimate(frame, boxes))

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        _, height, width, _ = frames.shape
        out = np.zeros_like(frames)
        for f, frame in enumerate(frames):
            keypoints, scores = self.detect(np.ascontiguousarray(frame))
            out[f] = draw_wholebody(
                keypoints / np.array([width, height]), scores, height, width, self.hand, self.face
            )
        return out

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "weights": [file_stamp(p) for p in self.files],
            "hand": self.hand,
            "face": self.face,
        }
