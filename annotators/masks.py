"""Region masks for a video from a few clicks: keyframe segmentation + propagation, in VideoGrain's layout.

The official VideoGrain code never runs SAM (its users draw masks in a separate web UI and convert
them by hand). Here masks are part of a run:

1. prompts (points / boxes / mask images on keyframes, :mod:`annotators.prompts`) are checked against
   the clip;
2. each prompted keyframe is segmented: SAM (:class:`~annotators.sam.SamSegmenter`) when a checkpoint
   is given, otherwise GrabCut from the box (weight-free); a given mask image is used as is;
3. the keyframe masks are propagated through the clip: SAM-2's video predictor
   (``propagation="sam2"``, :mod:`annotators.sam2_video`, needs the optional ``sam2`` package) or optical flow
   (:class:`~annotators.propagation.FlowMaskPropagator`: occlusion-aware warping refined by colour
   models, SAM re-segmentation when SAM weights are given);
4. optionally regions are made disjoint (a pixel in several regions goes to the smallest region over
   the clip, so ``eyes`` is cut out of ``man``: VideoGrain's part-editing layout) and a background
   region covering the rest is added;
5. the result is cached (:class:`~annotators.cache.AnnotationCache`) and written as
   ``<out>/<region>/<frame index:05d>.png`` (0/255) plus an overlay to check coverage,
   ``<out>/overlay.mp4`` and ``<out>/overlay_frames/<frame index:05d>.png``: regions in colour with a
   legend of their names, and the boxes/points that were given drawn on their keyframes.

As a data source, :class:`PromptedVideoClip` (``data=video_sam``) builds the masks of a run this way
instead of reading ``data.masks_dir``.

CLI: ``python -m annotators.masks --video clip.mp4 --out clip/layout_masks --box man:0:350,100,500,470``
(see ``--help``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from annotators.cache import AnnotationCache
from annotators.common import add_clip_arguments, read_clip
from annotators.prompts import KeyframePrompt, RegionPrompts
from annotators.propagation import FlowMaskPropagator
from annotators.sam import SamSegmenter, grabcut_segment
from annotators.sam2_video import Sam2VideoPropagator
from videoedit.data.source import SourceVideo, VideoClip
from videoedit.errors import ConfigError, MaskError, VideoEditError
from videoedit.io.atomic import write_json
from videoedit.io.manifest import build_manifest, verify_manifest
from videoedit.io.masks import write_masks
from videoedit.io.transforms import ResizeSpec
from videoedit.io.video import count_frames, read_video
from videoedit.io.visualize import add_legend, draw_prompts, overlay_masks, region_color
from videoedit.io.writers import write_frames, write_mp4
from videoedit.paths import default_cache_root, temporary_directory

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ layout ops


def make_disjoint(masks: np.ndarray) -> np.ndarray:
    """Give each pixel covered by several regions to the one with the smallest area over the clip.

    Args:
        masks: ``(F, R, H, W)`` bool.

    Returns:
        ``(F, R, H, W)`` bool with at most one region per pixel (parts such as ``eyes`` win over the
        whole ``man``, which becomes ``man_wo_eyes``).
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1] < 2:
        return masks.copy()
    area = masks.sum(axis=(0, 2, 3))
    order = np.argsort(area, kind="stable")  # smallest first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    # the winning region per pixel: the covering region of lowest rank
    score = np.where(masks, rank[None, :, None, None], len(order))
    winner = score.argmin(axis=1)
    out = np.zeros_like(masks)
    for r in range(masks.shape[1]):
        out[:, r] = masks[:, r] & (winner == r)
    return out


def add_background(masks: np.ndarray) -> np.ndarray:
    """Append a region covering every pixel no region covers: ``(F, R, H, W)`` -> ``(F, R+1, H, W)``."""
    masks = np.asarray(masks, dtype=bool)
    return np.concatenate([masks, ~masks.any(axis=1, keepdims=True)], axis=1)


OVERLAY_FRAMES = "overlay_frames"


def mask_overlay(
    frames: np.ndarray,
    masks: np.ndarray,
    regions: Sequence[str],
    indices: Sequence[int],
    prompts: RegionPrompts | None = None,
) -> np.ndarray:
    """The coverage overlay: regions in colour, the prompts' boxes/points on their keyframes (in their
    region's colour), and a legend of the region names below.

    Args:
        frames: ``(F, H, W, 3)`` uint8; masks: ``(F, R, H, W)`` bool; regions: the ``R`` names.
        indices: clip index of each frame (prompts name keyframes by clip index).
        prompts: the prompts the masks were built from (``None``: no marks).

    Returns:
        ``(F, H + legend, W, 3)`` uint8.
    """
    out = overlay_masks(frames, masks)
    if prompts is not None:
        position = {int(i): p for p, i in enumerate(indices)}
        for name, keyframes in prompts.regions.items():
            if name not in regions:
                continue
            color = region_color(list(regions).index(name))
            for kf in keyframes:
                if kf.frame in position and (kf.box is not None or kf.points):
                    p = position[kf.frame]
                    out[p] = draw_prompts(out[p], color, kf.box, kf.points, kf.labels)
    return add_legend(out, list(regions))


def write_mask_layout(
    out: str | Path,
    frames: np.ndarray,
    masks: np.ndarray,
    regions: Sequence[str],
    indices: Sequence[int],
    fps: float = 8.0,
    overlay: bool = True,
    prompts: RegionPrompts | None = None,
) -> Path:
    """Write ``(F, R, H, W)`` masks as ``<out>/<region>/<index:05d>.png``, and (``overlay``) the
    :func:`mask_overlay` as ``<out>/overlay.mp4`` and ``<out>/overlay_frames/<index:05d>.png``.

    The folder is what ``data.masks_dir`` (``videoedit.io.masks.read_masks``) reads back.
    """
    out = Path(out)
    if OVERLAY_FRAMES in regions:
        raise MaskError(
            f"A region may not be called '{OVERLAY_FRAMES}' (the overlay's frame folder): rename it."
        )
    write_masks(out, masks, list(regions), list(indices))
    if overlay:
        picture = mask_overlay(frames, masks, regions, indices, prompts)
        write_frames(out / OVERLAY_FRAMES, picture, [f"{i:05d}" for i in indices])
        write_mp4(out / "overlay.mp4", picture, fps)
    return out


# ------------------------------------------------------------------------------------ the builder


@dataclass
class MaskLayout:
    """Masks built for a clip.

    Attributes:
        masks: ``(F, R, H, W)`` bool at the frames' size.
        regions: the ``R`` region names.
        key: the annotation-cache key.
        cache_hit: whether they came from the cache.
    """

    masks: np.ndarray
    regions: list[str]
    key: str
    cache_hit: bool = False


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


class VideoMaskBuilder:
    """Prompts -> masks on every frame (see the module docstring).

    Args:
        prompts: a YAML file, a mapping of the same structure, or :class:`RegionPrompts`.
        regions: keep only these regions, in this order (default: every prompted region, then the
            background region if one is named).
        background: name of a background region to add (overrides the prompts' ``background``).
        disjoint: make regions disjoint (overrides the prompts' ``disjoint``).
        sam_checkpoint: SAM weights (``.pth``); ``None`` = weight-free (GrabCut keyframes, flow
            propagation with the adaptive refinement).
        sam_model_type: ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny`` (random weights, tests).
        propagation: ``flow`` or ``sam2`` (needs the ``sam2`` package and ``sam2_checkpoint``; see
            :class:`~annotators.sam2_video.Sam2VideoPropagator`).
        refine: flow propagation: ``adaptive`` (default), ``color`` or ``threshold`` (see
            :class:`~annotators.propagation.FlowMaskPropagator`).
        flow_backend: ``auto`` (RAFT if its weights exist, else DIS), ``raft``, ``dis``.
        raft_weights: RAFT-large state dict for ``auto``/``raft``.
        sam2_config, sam2_checkpoint: SAM-2 model config (a name in the package such as
            ``configs/sam2.1/sam2.1_hiera_s.yaml``, or a YAML file; ``None``: inferred from the released
            checkpoint's file name) and weights (``random``: random weights, tests only).
        sam2_dtype: ``auto`` (bf16 autocast on CUDA as SAM-2's demos, fp32 on the CPU), ``bfloat16``,
            ``float16`` or ``float32``.
        sam2_image_size: SAM-2's input size (``None``: the model config's, 1024).
        sam2_model_overrides: ``key=value`` changes of SAM-2's model config (small random models in tests).
        cache_root: SAM-2's frame folder is written under ``<cache_root>/tmp`` and removed (``None``: the
            default cache root; never ``$TMPDIR``). ``data=video_sam`` passes the clip's ``cache_root``.
        device: ``auto``, ``cpu``, ``cuda``.
    """

    def __init__(
        self,
        prompts: str | Mapping[str, Any] | RegionPrompts,
        regions: Sequence[str] | None = None,
        background: str | None = None,
        disjoint: bool | None = None,
        sam_checkpoint: str | None = None,
        sam_model_type: str = "vit_b",
        propagation: Literal["flow", "sam2"] = "flow",
        refine: Literal["adaptive", "color", "threshold"] = "adaptive",
        flow_backend: Literal["auto", "raft", "dis"] = "auto",
        raft_weights: str | None = None,
        sam2_config: str | None = None,
        sam2_checkpoint: str | None = None,
        sam2_dtype: str = "auto",
        sam2_image_size: int | None = None,
        sam2_model_overrides: Sequence[str] = (),
        cache_root: str | None = None,
        device: str = "auto",
    ) -> None:
        parsed = RegionPrompts.load(prompts)
        if background is not None:
            if background in parsed.regions:
                raise MaskError(
                    f"The background region '{background}' is also a prompted region: rename one."
                )
            parsed.background = background or None
        if disjoint is not None:
            parsed.disjoint = bool(disjoint)
        self.prompts = parsed.select(list(regions) if regions else None)
        if propagation not in ("flow", "sam2"):
            raise ConfigError(f"mask propagation must be 'flow' or 'sam2', got {propagation!r}")
        self.segmenter = (
            SamSegmenter(sam_model_type, sam_checkpoint, device)
            if sam_checkpoint or sam_model_type == "tiny"
            else None
        )
        self.sam2 = (
            Sam2VideoPropagator(
                sam2_config,
                sam2_checkpoint,
                device,
                dtype=sam2_dtype,
                image_size=sam2_image_size,
                cache_root=cache_root,
                model_overrides=sam2_model_overrides,
            )
            if propagation == "sam2"
            else None
        )
        self.propagator = FlowMaskPropagator(
            flow_backend=flow_backend,
            refine=refine,
            segmenter=self.segmenter,
            raft_weights=raft_weights,
            device=device,
        )

    @property
    def regions(self) -> list[str]:
        """The output regions, in order."""
        return self.prompts.names

    def settings(self) -> dict[str, Any]:
        mask_files = {
            kf.mask: _file_digest(kf.mask) for kfs in self.prompts.regions.values() for kf in kfs if kf.mask
        }
        return {
            "prompts": self.prompts.to_dict(),
            "mask_files": mask_files,
            "keyframes": "sam" if self.segmenter is not None else "grabcut",
            "sam": None if self.segmenter is None else self.segmenter.settings(),
            "propagation": self.sam2.settings() if self.sam2 is not None else self.propagator.settings(),
        }

    # ------------------------------------------------------------------ steps
    def segment_keyframe(self, image: np.ndarray, prompt: KeyframePrompt) -> np.ndarray:
        """``(H, W)`` bool mask of one region on one keyframe ``image (H, W, 3)``."""
        if prompt.mask is not None:
            return prompt.read_mask(image.shape[:2])
        points = np.array(prompt.points, dtype=np.float32).reshape(-1, 2)
        labels = np.array(prompt.labels, dtype=np.int64)
        box = None if prompt.box is None else np.array(prompt.box, dtype=np.float32)
        if self.segmenter is not None:
            mask, _ = self.segmenter.segment(image, points, labels, box)
            return mask
        return grabcut_segment(image, prompt.box, points, labels)

    def keyframe_masks(self, frames: np.ndarray, indices: Sequence[int]) -> list[dict[int, np.ndarray]]:
        """Per prompted region: ``{position in frames: (H, W) bool}`` (prompts on one frame are united)."""
        position = {int(i): p for p, i in enumerate(indices)}
        out = []
        for keyframes in self.prompts.regions.values():
            masks: dict[int, np.ndarray] = {}
            for kf in keyframes:
                pos = position[kf.frame]
                mask = self.segment_keyframe(frames[pos], kf)
                masks[pos] = masks[pos] | mask if pos in masks else mask
            out.append(masks)
        return out

    def _compute(self, frames: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        if self.sam2 is not None:
            position = {int(i): p for p, i in enumerate(indices)}
            prompts = [
                [
                    {
                        "position": position[kf.frame],
                        "points": np.array(kf.points, dtype=np.float32).reshape(-1, 2) if kf.points else None,
                        "labels": np.array(kf.labels, dtype=np.int32) if kf.points else None,
                        "box": None if kf.box is None else np.array(kf.box, dtype=np.float32),
                        "mask": None if kf.mask is None else kf.read_mask(frames.shape[1:3]),
                    }
                    for kf in kfs
                ]
                for kfs in self.prompts.regions.values()
            ]
            masks = self.sam2.propagate_prompts(frames, prompts, list(self.prompts.regions))
        else:
            keyframes = self.keyframe_masks(frames, indices)
            masks = np.stack([self.propagator.propagate(frames, k) for k in keyframes], axis=1)
        if self.prompts.disjoint:
            masks = make_disjoint(masks)
        if self.prompts.background:
            masks = add_background(masks)
        return masks

    def build(
        self,
        frames: np.ndarray,
        indices: Sequence[int] | None = None,
        total_frames: int | None = None,
        cache: AnnotationCache | None = None,
    ) -> MaskLayout:
        """Masks for ``frames``.

        Args:
            frames: ``(F, H, W, 3)`` uint8 at the size the prompt coordinates refer to.
            indices: clip index of each frame (default ``0..F-1``).
            total_frames: frames in the whole clip (default ``max(indices) + 1``), to tell a keyframe
                past the end from one that was not read.
            cache: reuse / store the result.

        Raises:
            MaskError: a prompt does not fit the clip (see :meth:`RegionPrompts.validate`).
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        indices = list(range(len(frames))) if indices is None else [int(i) for i in indices]
        total = total_frames if total_frames is not None else max(indices) + 1
        self.prompts.validate(indices, total, frames.shape[1:3])
        settings = self.settings()
        key = AnnotationCache.key("masks", frames, settings, indices)
        shape = (len(frames), len(self.regions), *frames.shape[1:3])
        if cache is None:
            return MaskLayout(self._compute(frames, indices), self.regions, key)
        masks, hit = cache.get_or_compute(
            "masks", frames, settings, lambda: self._compute(frames, indices), indices, shape, np.bool_
        )
        return MaskLayout(masks, self.regions, key, hit)


# ------------------------------------------------------------------------------- as a data source


def _layout_problems(folder: Path) -> list[str]:
    """Problems of a cached mask layout folder against the manifest in its ``COMPLETE`` marker."""
    marker = folder / "COMPLETE"
    if not marker.is_file():
        return ["not written yet"]
    try:
        manifest = json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        manifest = None
    return verify_manifest(folder, manifest)


class PromptedVideoClip(VideoClip):
    """A :class:`VideoClip` whose region masks are built from prompts (``data=video_sam``).

    Masks are built at the clip's own size on the frames read (so prompt coordinates are pixels of the
    original frames), cached, written in VideoGrain's layout under
    ``<cache_root>/annotations/layouts/<key>/`` and then read like ``data.masks_dir``: they go through
    the same resize/crop as the frames.

    Args:
        path, prompt, start_frame, num_frames, stride, resize, conditions, name, data_root: as
            :class:`VideoClip`.
        mask_builder: a :class:`VideoMaskBuilder` (or its arguments as a mapping).
        regions: regions to use, in the order of the local prompts (default: the builder's).
        cache_root: where masks are cached (default ``$VIDEOEDIT_CACHE_ROOT`` or ``~/.cache/videoedit``).
        cache: reuse / store masks in the annotation cache (``data=video_sam`` sets it from
            ``cache_annotations``); ``False`` builds them every time, in a temporary folder.
    """

    #: ``load()`` does annotation work (builds masks): ``edit()`` builds the run's annotator first, so a
    #: missing-weights annotator fails before it
    annotates_on_load = True

    def __init__(
        self,
        path: str,
        mask_builder: VideoMaskBuilder | Mapping[str, Any],
        prompt: str = "",
        regions: Sequence[str] = (),
        start_frame: int = 0,
        num_frames: int | None = None,
        stride: int = 1,
        resize: ResizeSpec | Mapping | None = None,
        conditions: Mapping[str, str] | None = None,
        name: str | None = None,
        cache_root: str | None = None,
        cache: bool = True,
        data_root: str | None = None,
    ) -> None:
        super().__init__(
            path,
            prompt,
            None,
            (),
            start_frame,
            num_frames,
            stride,
            resize,
            conditions,
            name,
            data_root=data_root,
        )
        root = Path(cache_root) if cache_root else default_cache_root()
        if isinstance(mask_builder, VideoMaskBuilder):
            builder = mask_builder
        else:  # scratch files (SAM-2's frame folder) under this clip's cache root unless set
            builder = VideoMaskBuilder(**{"cache_root": str(root), **dict(mask_builder)})
        unknown = [r for r in regions or () if r not in builder.regions]
        if unknown:
            raise MaskError(
                f"Unknown region(s) {unknown} in data.regions: the mask prompts define {builder.regions}."
            )
        self.mask_builder = builder
        self.wanted_regions = list(regions) or builder.regions
        self.cache_root = root
        self.cache = bool(cache)

    def load(self) -> SourceVideo:
        video = read_video(self.path, self.sampling)
        total = count_frames(self.path)
        if not self.cache:  # built every time; written to a temporary folder only to be read back
            layout = self.mask_builder.build(video.frames, video.indices, total, None)
            with temporary_directory("masks-", self.cache_root) as tmp:
                folder = Path(tmp)
                write_mask_layout(
                    folder, video.frames, layout.masks, layout.regions, video.indices, overlay=False
                )
                logger.info("masks: %s from prompts (cache off)", layout.regions)
                self.masks_dir, self.regions = folder, list(self.wanted_regions)
                try:
                    return super().load()
                finally:
                    self.masks_dir = None
        cache = AnnotationCache(self.cache_root / "annotations")
        layout = self.mask_builder.build(video.frames, video.indices, total, cache)
        folder = self.cache_root / "annotations" / "layouts" / layout.key
        problems = _layout_problems(folder)
        if problems:  # missing, cut short, or changed on disk: (re)written from the masks
            if (folder / "COMPLETE").is_file():
                logger.warning("rewriting the cached mask layout %s: %s", folder, "; ".join(problems[:3]))
            shutil.rmtree(folder, ignore_errors=True)
            write_mask_layout(
                folder,
                video.frames,
                layout.masks,
                layout.regions,
                video.indices,
                video.fps,
                prompts=self.mask_builder.prompts,
            )
            write_json(
                folder / "COMPLETE", build_manifest(folder)
            )  # written last, with every file's checksum
        logger.info(
            "masks: %s from prompts (cache %s) in %s",
            layout.regions,
            "hit" if layout.cache_hit else "miss",
            folder,
        )
        self.masks_dir, self.regions = folder, list(self.wanted_regions)
        return super().load()


# ------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m annotators.masks",
        description=(
            "Write region masks for a clip in VideoGrain's layout (<out>/<region>/<frame:05d>.png) plus "
            "<out>/overlay.mp4, from points/boxes on keyframes (SAM or GrabCut) propagated through the "
            "clip, or from an automatic layout."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  python -m annotators.masks --video clip.mp4 --out clip/layout_masks \\\n"
            "      --box man:0:350,100,500,470 --point man:0:420,300 --background bg\n"
            "  python -m annotators.masks --video frames/ --out masks --prompts prompts.yaml \\\n"
            "      --sam-checkpoint sam_vit_b_01ec64.pth --sam-model vit_b\n"
            "  python -m annotators.masks --video clip.mp4 --out masks --auto sam --sam-checkpoint ... \n"
            "  python -m annotators.masks --video clip.mp4 --out masks --labels clusters.npy\n"
        ),
    )
    add_clip_arguments(parser, sampling=True)
    parser.add_argument("--out", required=True, help="output mask folder (then data.masks_dir=<out>)")
    parser.add_argument("--prompts", help="YAML file of region prompts (see annotators/prompts.py)")
    parser.add_argument("--point", action="append", default=[], help="REGION:FRAME:X,Y[,LABEL] (repeatable)")
    parser.add_argument("--box", action="append", default=[], help="REGION:FRAME:X0,Y0,X1,Y1 (repeatable)")
    parser.add_argument("--mask", action="append", default=[], help="REGION:FRAME:PATH of a mask image")
    parser.add_argument("--regions", help="comma-separated regions to write, in order (default: all)")
    parser.add_argument("--background", help="add a background region with this name")
    parser.add_argument("--disjoint", action="store_true", help="overlaps go to the smallest region")
    parser.add_argument("--sam-checkpoint", help="SAM weights (.pth); without: GrabCut keyframes")
    parser.add_argument("--sam-model", default="vit_b", help="vit_h | vit_l | vit_b (| tiny: random, tests)")
    parser.add_argument("--propagation", choices=("flow", "sam2"), default="flow")
    parser.add_argument("--refine", choices=("adaptive", "color", "threshold"), default="adaptive")
    parser.add_argument("--flow", choices=("auto", "raft", "dis"), default="auto", help="flow backend")
    parser.add_argument("--sam2-config", help="SAM-2 model config (with --propagation sam2)")
    parser.add_argument("--sam2-checkpoint", help="SAM-2 weights (with --propagation sam2)")
    parser.add_argument(
        "--sam2-dtype",
        default="auto",
        choices=("auto", "bfloat16", "float16", "float32"),
        help="SAM-2 precision (auto: bf16 autocast on CUDA, fp32 on the CPU)",
    )
    parser.add_argument("--auto", choices=("sam",), help="automatic layout from SAM's mask generator")
    parser.add_argument("--labels", help="(F, h, w) int .npy of cluster labels -> one region per label")
    parser.add_argument("--max-regions", type=int, default=4, help="--auto: keep the largest N masks")
    parser.add_argument("--keyframe", type=int, default=0, help="--auto: clip index of the keyframe")
    parser.add_argument(
        "--cache-root", default=None, help="annotation cache root (default $VIDEOEDIT_CACHE_ROOT)"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--device", default="auto")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from annotators import layouts

    args = _parser().parse_args(argv)
    clip = read_clip(args)
    frames, indices = clip.frames, clip.indices
    wanted = [r for r in (args.regions or "").split(",") if r]
    prompts = None
    if args.labels:
        labels = np.load(args.labels)
        if labels.ndim != 3 or len(labels) != len(frames):
            raise MaskError(
                f"--labels {args.labels} holds {labels.shape} label maps but {len(frames)} frames were read: "
                "give one (h, w) label map per frame read, i.e. an (F, h, w) array with F = "
                f"{len(frames)} (check --num-frames/--start/--stride)."
            )
        masks, regions = layouts.labels_to_masks(labels, frames.shape[1:3])
    elif args.auto == "sam":
        masks, regions = layouts.sam_automatic_layout(
            frames,
            SamSegmenter(args.sam_model, args.sam_checkpoint, args.device),
            keyframe=indices.index(args.keyframe)
            if args.keyframe in indices
            else _bad_keyframe(args, indices),
            max_regions=args.max_regions,
            background=args.background,
            propagator=FlowMaskPropagator(args.flow, args.refine, device=args.device),
        )
    else:
        if args.prompts:
            prompts = RegionPrompts.from_yaml(args.prompts)
        else:
            prompts = RegionPrompts.from_cli(args.point, args.box, args.mask)
        builder = VideoMaskBuilder(
            prompts,
            regions=wanted or None,
            background=args.background,
            disjoint=True if args.disjoint else None,
            sam_checkpoint=args.sam_checkpoint,
            sam_model_type=args.sam_model,
            propagation=args.propagation,
            refine=args.refine,
            flow_backend=args.flow,
            sam2_config=args.sam2_config,
            sam2_checkpoint=args.sam2_checkpoint,
            sam2_dtype=args.sam2_dtype,
            cache_root=args.cache_root,
            device=args.device,
        )
        cache = (
            None
            if args.no_cache
            else AnnotationCache(Path(args.cache_root or default_cache_root()) / "annotations")
        )
        layout = builder.build(frames, indices, count_frames(args.video), cache)
        masks, regions, prompts = layout.masks, layout.regions, builder.prompts
        wanted = []
    if wanted:
        unknown = [r for r in wanted if r not in regions]
        if unknown:
            raise MaskError(f"Unknown region(s) {unknown}: the layout has {regions}.")
        masks = masks[:, [regions.index(r) for r in wanted]]
        regions = wanted
    out = write_mask_layout(args.out, frames, masks, regions, indices, clip.fps, prompts=prompts)
    coverage = ", ".join(f"{r} {masks[:, i].mean():.1%}" for i, r in enumerate(regions))
    print(
        f"wrote {len(regions)} regions x {len(indices)} frames to {out}/ (coverage: {coverage}); "
        f"overlay {out}/overlay.mp4 and {out}/{OVERLAY_FRAMES}/"
    )
    return 0


def _bad_keyframe(args: argparse.Namespace, indices: Sequence[int]) -> int:
    raise MaskError(
        f"Keyframe {args.keyframe} is not among the frames read ({indices[0]}..{indices[-1]}, stride "
        f"{getattr(args, 'stride', 1)})."
    )


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except VideoEditError as err:  # a clear message, no traceback
        raise SystemExit(f"error: {err}") from None
