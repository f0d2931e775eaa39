"""Automatic region layouts, so a user can start without drawing.

* :func:`labels_to_masks`: per-frame cluster label maps (e.g. KMeans of inversion features, as in
  VideoGrain's ``cluster_inversion_feature`` study, at the latent resolution) -> one region per label
  at the frames' size.
* :func:`sam_automatic_layout`: SAM's automatic mask generator on a keyframe, the largest masks kept
  and propagated through the clip with :class:`~annotators.propagation.FlowMaskPropagator`.

Both return ``(masks (F, R, H, W) bool, names)``, written in VideoGrain's layout by
:func:`annotators.masks.write_mask_layout` (CLI: ``python -m annotators.masks --labels`` /
``--auto sam``). Regions are named ``cluster_<label>`` / ``region_<i>``: rename the folders to the
local prompts they stand for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from annotators.masks import add_background, make_disjoint
from annotators.propagation import FlowMaskPropagator
from annotators.sam import SamSegmenter
from videoedit.errors import MaskError


def labels_to_masks(
    labels: np.ndarray,
    size: tuple[int, int],
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """One region per cluster label.

    Args:
        labels: ``(F, h, w)`` int label maps (negative = no region).
        size: ``(H, W)`` of the frames; labels are upsampled with nearest neighbour.
        names: one name per distinct label, in increasing label order (default ``cluster_<label>``).

    Returns:
        ``(F, R, H, W)`` bool masks (disjoint by construction) and their names.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise MaskError(
            f"cluster labels must be an (F, h, w) integer array, got {labels.shape} {labels.dtype}"
        )
    values = [int(v) for v in np.unique(labels) if v >= 0]
    if not values:
        raise MaskError("cluster labels hold no label >= 0")
    if names is not None and len(names) != len(values):
        raise MaskError(f"{len(names)} names for {len(values)} labels {values}")
    height, width = size
    big = np.stack(
        [cv2.resize(f.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST) for f in labels]
    )
    masks = np.stack([big == v for v in values], axis=1)
    return masks, list(names) if names is not None else [f"cluster_{v}" for v in values]


def sam_automatic_layout(
    frames: np.ndarray,
    segmenter: SamSegmenter,
    keyframe: int = 0,
    max_regions: int = 4,
    min_area: float = 0.01,
    background: str | None = "bg",
    propagator: FlowMaskPropagator | None = None,
    generator_kwargs: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Regions from SAM's automatic masks on one keyframe, propagated through the clip.

    Args:
        frames: ``(F, H, W, 3)`` uint8.
        keyframe: position in ``frames`` of the frame SAM segments.
        max_regions: keep the largest masks (after making them disjoint).
        min_area: drop masks smaller than this fraction of the frame.
        background: name of a region covering the rest (``None``: none).
        propagator: how masks travel (default: weight-free flow propagation).
        generator_kwargs: ``SamAutomaticMaskGenerator`` options.

    Returns:
        ``(F, R, H, W)`` bool and the names ``region_0, ...`` (+ ``background``).
    """
    if not 0 <= keyframe < len(frames):
        raise MaskError(f"keyframe {keyframe} is past the end of the clip ({len(frames)} frames)")
    found = segmenter.automatic(frames[keyframe], **dict(generator_kwargs or {}))
    height, width = frames.shape[1:3]
    found = [m for m in found if m.sum() >= min_area * height * width]
    if not found:
        raise MaskError("SAM's automatic mask generator found no mask on the keyframe; draw prompts instead.")
    key_masks = make_disjoint(np.stack(found)[None])[0]
    order = np.argsort(-key_masks.sum(axis=(1, 2)), kind="stable")[:max_regions]
    key_masks = [key_masks[i] for i in order if key_masks[i].any()]
    propagator = propagator or FlowMaskPropagator(flow_backend="dis")
    masks = np.stack([propagator.propagate(frames, {keyframe: m}) for m in key_masks], axis=1)
    masks = make_disjoint(masks)
    names = [f"region_{i}" for i in range(masks.shape[1])]
    if background:
        masks = add_background(masks)
        names.append(background)
    return masks, names
