"""Segment Anything (segment-anything 1.0): masks from points/boxes, and automatic masks.

:func:`build_sam` loads SAM ViT-H/L/B from a checkpoint file (``sam_vit_b_01ec64.pth``...), or builds
random-weight models for plumbing tests: ``model_type="tiny"`` (a 256-px SAM made from the package's own
classes, ~15 ms a frame) or ``checkpoint="random"`` for the real architectures. Random weights give
meaningless masks: they only exercise the code.

When no SAM weights are given, :func:`grabcut_segment` segments a keyframe without weights (OpenCV
GrabCut from the box, clicked points as sure inside/outside seeds).
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from annotators.common import file_stamp, resolve_device
from videoedit.errors import MaskError, ModelLoadError

SAM_TYPES = ("vit_h", "vit_l", "vit_b", "tiny")
SAM_DOWNLOADS = "https://github.com/facebookresearch/segment-anything#model-checkpoints"


def build_tiny_sam(seed: int = 0, image_size: int = 256):
    """A small random-weight SAM from segment-anything's classes (tests only: its masks are noise)."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    dim, patch = 32, 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch,
            embed_dim=32,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_sam(model_type: str = "vit_b", checkpoint: str | None = None, device: str = "auto"):
    """A SAM model in eval mode on ``device``.

    Args:
        model_type: ``vit_h``, ``vit_l``, ``vit_b`` (official checkpoints) or ``tiny`` (random, tests).
        checkpoint: the ``.pth`` file of ``model_type``; ``"random"`` builds random weights.

    Raises:
        ModelLoadError: the checkpoint is missing or does not fit ``model_type``.
    """
    if model_type not in SAM_TYPES:
        raise MaskError(f"SAM model type must be one of {', '.join(SAM_TYPES)}, got {model_type!r}.")
    device = resolve_device(device)
    if model_type == "tiny":
        return build_tiny_sam().to(device)
    from segment_anything import sam_model_registry

    if checkpoint == "random":
        return sam_model_registry[model_type](checkpoint=None).eval().to(device)
    if not checkpoint or not Path(checkpoint).expanduser().is_file():
        raise ModelLoadError(
            f"SAM checkpoint not found: {checkpoint or '(none given)'}. Download sam_{model_type} "
            f"weights ({SAM_DOWNLOADS}) and pass the file, or leave SAM out: keyframes are then segmented "
            "with GrabCut from a box, and masks are propagated with optical flow + colour refinement."
        )
    sam = sam_model_registry[model_type](checkpoint=None)
    try:
        state = torch.load(Path(checkpoint).expanduser(), map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    except Exception as err:
        raise ModelLoadError(
            f"Could not load SAM {model_type} from {checkpoint} ({type(err).__name__}: {err}). Check that "
            "the file is a segment-anything checkpoint of that model type (sam_model_type=...)."
        ) from err
    return sam.eval().to(device)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class SamSegmenter:
    """SAM's predictor for one image at a time, with the choice among SAM's three candidate masks.

    Args:
        model_type, checkpoint, device: see :func:`build_sam`.
    """

    def __init__(
        self, model_type: str = "vit_b", checkpoint: str | None = None, device: str = "auto"
    ) -> None:
        from segment_anything import SamPredictor

        self.model_type = model_type
        self.checkpoint = checkpoint
        self.sam = build_sam(model_type, checkpoint, device)
        self.predictor = SamPredictor(self.sam)
        self._image_key: str | None = None

    def settings(self) -> dict[str, Any]:
        """Model type and weights (path, size and mtime of a local checkpoint: new weights, new key)."""
        return {"sam": self.model_type, "weights": file_stamp(self.checkpoint)}

    def set_image(self, image: np.ndarray) -> None:
        """Embed ``image (H, W, 3)`` uint8 RGB (skipped when it is the image already embedded)."""
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
        if key != self._image_key:
            self.predictor.set_image(np.ascontiguousarray(image), image_format="RGB")
            self._image_key = key

    @torch.no_grad()
    def segment(
        self,
        image: np.ndarray,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        reference: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        """One mask for the prompts.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            points: ``(N, 2)`` ``(x, y)`` pixels; labels ``(N,)`` 1 = inside, 0 = outside.
            box: ``(4,)`` ``x0, y0, x1, y1`` pixels.
            reference: ``(H, W)`` bool; when given, the candidate closest to it (IoU) is returned,
                otherwise the one SAM scores best.

        Returns:
            ``(mask (H, W) bool, score)``: score is SAM's predicted IoU, or the IoU with ``reference``.
        """
        self.set_image(image)
        has_points = points is not None and len(points) > 0
        masks, scores, _ = self.predictor.predict(
            point_coords=np.asarray(points, dtype=np.float32) if has_points else None,
            point_labels=np.asarray(labels, dtype=np.int64) if has_points else None,
            box=None if box is None else np.asarray(box, dtype=np.float32),
            multimask_output=True,
        )
        if reference is not None:
            ious = [mask_iou(m, reference) for m in masks]
            best = int(np.argmax(ious))
            return masks[best].astype(bool), ious[best]
        best = int(np.argmax(scores))
        return masks[best].astype(bool), float(scores[best])

    def automatic(self, image: np.ndarray, **generator_kwargs: Any) -> list[np.ndarray]:
        """SAM's automatic mask generator on ``image``: ``(H, W)`` bool masks, largest first.

        ``generator_kwargs`` go to ``SamAutomaticMaskGenerator`` (``points_per_side``,
        ``pred_iou_thresh``, ``stability_score_thresh``...).
        """
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(self.sam, **generator_kwargs)
        found = generator.generate(np.ascontiguousarray(image))
        found.sort(key=lambda m: m["area"], reverse=True)
        return [np.asarray(m["segmentation"], dtype=bool) for m in found]


def grabcut_segment(
    image: np.ndarray,
    box: tuple[float, float, float, float] | None = None,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    iterations: int = 5,
) -> np.ndarray:
    """Weight-free keyframe segmentation: OpenCV GrabCut (Rother et al. 2004) from a box, with clicked
    points as sure-inside (label 1) / sure-outside (label 0) seeds (disc of 1% of the short side).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        box: ``x0, y0, x1, y1`` pixels. Without a box, the box of the inside points, grown by 25%.

    Returns:
        ``(H, W)`` bool.
    """
    height, width = image.shape[:2]
    points = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    labels = np.ones(len(points), int) if labels is None else np.asarray(labels, dtype=int)
    if box is None:
        inside = points[labels == 1]
        if len(inside) == 0:
            raise MaskError(
                "Without SAM weights a keyframe needs a box or at least one inside point (label 1) to "
                "segment from (or pass --sam-checkpoint)."
            )
        lo, hi = inside.min(0), inside.max(0)
        pad = np.maximum(0.25 * (hi - lo), 0.1 * min(height, width))
        (x0, y0), (x1, y1) = lo - pad, hi + pad
    else:
        x0, y0, x1, y1 = box
    x0, y0 = int(np.clip(np.floor(x0), 0, width - 2)), int(np.clip(np.floor(y0), 0, height - 2))
    x1, y1 = int(np.clip(np.ceil(x1), x0 + 2, width)), int(np.clip(np.ceil(y1), y0 + 2, height))
    gc = np.full((height, width), cv2.GC_BGD, np.uint8)
    gc[y0:y1, x0:x1] = cv2.GC_PR_FGD
    radius = max(2, round(0.01 * min(height, width)))
    for (x, y), lab in zip(points, labels):
        cv2.circle(gc, (round(x), round(y)), radius, int(cv2.GC_FGD if lab == 1 else cv2.GC_BGD), -1)
    if not (gc == cv2.GC_BGD).any():  # a box over the whole frame: the border is background
        gc[[0, -1], :] = cv2.GC_BGD
        gc[:, [0, -1]] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
