"""Depth condition maps for the ControlNet depth models (near = bright, grey in 3 channels).

* :class:`ControlnetAuxDepth`: controlnet-aux's MiDaS (``dpt_hybrid-midas-501f0c75.pt``) or ZoeDepth
  (``ZoeD_M12_N.pt``) from a local folder or ``lllyasviel/Annotators``: the official VideoGrain
  ``depth`` / ``depth_zoe`` annotators.
* :class:`TransformersDepth`: any ``transformers`` depth-estimation model (Depth Anything, DPT/MiDaS
  ``Intel/dpt-hybrid-midas``, ZoeDepth ``Intel/zoedepth-nyu-kitti``) from a hub id or a local folder.

Normalisation as the ControlNet depth annotators do it (:func:`normalize_depth`):

* ``minmax`` (MiDaS, Depth Anything: their output is relative inverse depth, large = near):
  ``(d - min) / (max - min)``;
* ``inverse_percentile`` (ZoeDepth: metric depth, large = far): ``1 - (d - p2) / (p85 - p2)``,
  clipped to [0, 1] (ControlNet's ``ZoeDetector``).

Both per frame (``normalize_over="frame"``, official) or with one range for the whole clip
(``"video"``: no flicker from per-frame rescaling).

Precomputed depth videos are read by ``annotator=precomputed annotator.path=<video>`` or
``data.conditions.depth=<video>``.

CLI: ``python -m annotators.depth --video clip.mp4 --out clip/depth --backend zoe``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from annotators.base import Annotator
from annotators.common import (
    LazyModelAnnotator,
    add_clip_arguments,
    file_stamp,
    read_clip,
    resize_map,
    resolve_device,
    resolve_weight_file,
    write_condition_maps,
)
from videoedit.errors import ConfigError, ModelLoadError, VideoEditError

Normalization = Literal["minmax", "inverse_percentile"]
NORMALIZATIONS = ("minmax", "inverse_percentile")
OFFLINE_DEPTH = (
    "annotator=precomputed annotator.path=<depth video> (or data.conditions.depth=<video>) with maps "
    "made elsewhere"
)


def normalize_depth(
    depth: np.ndarray, normalization: Normalization = "minmax", over: Literal["frame", "video"] = "frame"
) -> np.ndarray:
    """Raw depth ``(F, H, W)`` float -> ``(F, H, W)`` uint8 ControlNet depth (near = 255).

    ``minmax`` expects inverse depth (large = near), ``inverse_percentile`` metric depth (large = far).
    """
    if over not in ("frame", "video"):
        raise ValueError(f"over must be 'frame' or 'video', got {over!r}")
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 3:
        raise ValueError(f"depth must be (F, H, W), got {depth.shape}")
    axes = (1, 2) if over == "frame" else (0, 1, 2)
    if normalization == "minmax":
        lo = depth.min(axis=axes, keepdims=True)
        hi = depth.max(axis=axes, keepdims=True)
        out = (depth - lo) / np.where(hi > lo, hi - lo, 1.0)
    elif normalization == "inverse_percentile":
        lo = np.percentile(depth, 2, axis=axes, keepdims=True)
        hi = np.percentile(depth, 85, axis=axes, keepdims=True)
        out = 1.0 - (depth - lo) / np.where(hi > lo, hi - lo, 1.0)
    else:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    return (out * 255.0).clip(0, 255).astype(np.uint8)


#: the weight files a transformers checkpoint may hold (single file or sharded index), preferred first
TRANSFORMERS_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def find_transformers_weights(name: str) -> str:
    """The weight file of a transformers checkpoint (folder or hub id), checked before any model loads.

    Returns the local file (a folder, or a hub id in the local cache), or ``"<hub id>/<file>"`` for a
    hub file that exists but is not downloaded yet (online only).

    Raises:
        ModelLoadError: no weight file (a folder with only ``config.json``, an uncached hub id offline...).
    """
    folder = Path(name).expanduser()
    if folder.is_dir():
        for filename in TRANSFORMERS_WEIGHTS:
            if (folder / filename).is_file():
                return str(folder / filename)
        raise ModelLoadError(
            f"Depth annotator: {folder} has a config but no weights ({' / '.join(TRANSFORMERS_WEIGHTS)}). "
            f"Save the model there (save_pretrained), or use {OFFLINE_DEPTH}."
        )
    from huggingface_hub import try_to_load_from_cache

    for filename in TRANSFORMERS_WEIGHTS:
        found = try_to_load_from_cache(name, filename)
        if isinstance(found, str) and Path(found).is_file():
            return found
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    if not offline:
        try:
            from huggingface_hub import file_exists

            for filename in TRANSFORMERS_WEIGHTS:
                if file_exists(name, filename):
                    return f"{name}/{filename}"
        except Exception as err:
            raise ModelLoadError(
                f"Depth annotator: could not look up the weights of {name} on the hub ({type(err).__name__}). "
                f"Give a local folder, or use {OFFLINE_DEPTH}."
            ) from err
    raise ModelLoadError(
        f"Depth annotator: no weights for {name} "
        f"({'not in the local Hugging Face cache and HF_HUB_OFFLINE is set' if offline else 'no weight file in the repo'}). "
        f"Download the model into a local folder and pass that folder, or use {OFFLINE_DEPTH}."
    )


class TransformersDepth(LazyModelAnnotator):
    """A ``transformers`` depth-estimation model (``AutoModelForDepthEstimation``).

    Args:
        pretrained_model_name_or_path: hub id or local folder (model + image processor).
        normalization: ``auto`` (``inverse_percentile`` for ZoeDepth models, else ``minmax``),
            ``minmax`` or ``inverse_percentile``.
        normalize_over: ``frame`` (official: each map spans 0..255) or ``video``.
        device: ``auto``, ``cpu``, ``cuda``...
    """

    condition_type = "depth"
    offline_alternative = OFFLINE_DEPTH

    def __init__(
        self,
        pretrained_model_name_or_path: str = "depth-anything/Depth-Anything-V2-Small-hf",
        normalization: Literal["auto", "minmax", "inverse_percentile"] = "auto",
        normalize_over: Literal["frame", "video"] = "frame",
        device: str = "auto",
    ) -> None:
        from transformers import AutoConfig

        if normalization not in ("auto", *NORMALIZATIONS):
            raise ConfigError(
                f"annotator.normalization must be auto, minmax or inverse_percentile, got {normalization!r}"
            )
        if normalize_over not in ("frame", "video"):
            raise ConfigError(f"annotator.normalize_over must be frame or video, got {normalize_over!r}")
        self.pretrained_model_name_or_path = str(pretrained_model_name_or_path)
        try:
            config = AutoConfig.from_pretrained(self.pretrained_model_name_or_path)
        except Exception as err:
            raise ModelLoadError(
                f"Depth annotator: no depth model at {self.pretrained_model_name_or_path} "
                f"({type(err).__name__}). Give a local folder or a hub id you can download, or use "
                f"{OFFLINE_DEPTH}."
            ) from err
        self.weights = find_transformers_weights(self.pretrained_model_name_or_path)
        self.model_type = str(getattr(config, "model_type", ""))
        if normalization == "auto":
            normalization = "inverse_percentile" if self.model_type == "zoedepth" else "minmax"
        self.normalization = normalization
        self.normalize_over = normalize_over
        self.device = resolve_device(device)

    def _build(self) -> Any:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        processor = AutoImageProcessor.from_pretrained(self.pretrained_model_name_or_path)
        model = AutoModelForDepthEstimation.from_pretrained(self.pretrained_model_name_or_path)
        return processor, model.eval().to(self.device)

    def raw_depth(self, frames: np.ndarray) -> np.ndarray:
        """The model's output for ``frames (F, H, W, 3)`` uint8, resized to ``(F, H, W)`` float32."""
        import torch
        import torch.nn.functional as F

        processor, model = self.detector
        _, height, width, _ = frames.shape
        out = []
        with torch.no_grad():
            for frame in frames:
                inputs = processor(images=frame, return_tensors="pt").to(self.device)
                pred = model(**inputs).predicted_depth  # (1, h, w)
                pred = F.interpolate(pred[:, None].float(), size=(height, width), mode="bicubic")
                out.append(pred[0, 0].cpu().numpy())
        return np.stack(out).astype(np.float32)

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        depth = normalize_depth(self.raw_depth(frames), self.normalization, self.normalize_over)
        return np.repeat(depth[..., None], 3, axis=-1)

    def settings(self) -> dict[str, Any]:
        path = Path(self.pretrained_model_name_or_path)
        return {
            **super().settings(),
            "model": str(path.resolve()) if path.exists() else self.pretrained_model_name_or_path,
            "weights": file_stamp(self.weights),
            "model_type": self.model_type,
            "normalization": self.normalization,
            "normalize_over": self.normalize_over,
        }


class ControlnetAuxDepth(LazyModelAnnotator):
    """controlnet-aux's MiDaS or ZoeDepth detector (the ControlNet 1.1 / official VideoGrain annotators).

    Args:
        model: ``midas`` (DPT-Hybrid, min-max normalised; official ``depth``) or ``zoe`` (ZoeD_M12_N,
            2nd/85th percentile, inverted; official ``depth_zoe``).
        pretrained_model_or_path: local folder or hub repo with the weight file
            (official: ``lllyasviel/Annotators``).
        detect_resolution: the short side the model runs at (controlnet-aux default 512).
        device: ``auto``, ``cpu``, ``cuda``...
    """

    condition_type = "depth"
    offline_alternative = OFFLINE_DEPTH
    FILES: ClassVar[dict[str, str]] = {"midas": "dpt_hybrid-midas-501f0c75.pt", "zoe": "ZoeD_M12_N.pt"}

    def __init__(
        self,
        model: Literal["midas", "zoe"] = "zoe",
        pretrained_model_or_path: str = "lllyasviel/Annotators",
        detect_resolution: int = 512,
        device: str = "auto",
    ) -> None:
        if model not in self.FILES:
            raise ConfigError(f"annotator.model must be one of {sorted(self.FILES)}, got {model!r}")
        self.model = model
        self.pretrained_model_or_path = str(pretrained_model_or_path)
        self.detect_resolution = int(detect_resolution)
        self.device = resolve_device(device)
        alternative = "annotator=depth_anything with a transformers depth model you have, or " + OFFLINE_DEPTH
        self.file = resolve_weight_file(
            self.pretrained_model_or_path, self.FILES[model], f"{model} depth annotator", alternative
        )

    def _build(self) -> Any:
        if self.model == "midas":
            from controlnet_aux.midas import MidasDetector

            detector = MidasDetector.from_pretrained(str(self.file.parent), filename=self.file.name)
        else:
            from controlnet_aux.zoe import ZoeDetector

            detector = ZoeDetector.from_pretrained(str(self.file.parent), filename=self.file.name)
        return detector.to(self.device)

    def annotate(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
        _, height, width, _ = frames.shape
        out = []
        for frame in frames:
            depth = self.detector(
                frame,
                detect_resolution=self.detect_resolution,
                image_resolution=min(height, width),
                output_type="np",
            )
            out.append(resize_map(np.asarray(depth), height, width))
        return np.stack(out)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "model": self.model,
            "weights": file_stamp(self.file),
            "detect_resolution": self.detect_resolution,
        }


# ------------------------------------------------------------------------------------------- CLI

BACKENDS = ("zoe", "midas", "transformers")


def build_depth_annotator(backend: str, weights: str | None = None) -> Annotator:
    """The depth annotator of a backend name (``zoe``, ``midas``, ``transformers``)."""
    if backend in ("zoe", "midas"):
        return ControlnetAuxDepth(backend, weights or "lllyasviel/Annotators")
    if backend == "transformers":
        return TransformersDepth(weights or "depth-anything/Depth-Anything-V2-Small-hf")
    raise ConfigError(f"unknown depth backend {backend!r}: pick one of {', '.join(BACKENDS)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m annotators.depth",
        description="Write depth condition maps (one PNG per frame + an mp4 preview) for a clip.",
    )
    add_clip_arguments(parser, sampling=False)
    parser.add_argument("--out", required=True, help="output folder (then data.conditions.depth=<out>)")
    parser.add_argument("--backend", choices=BACKENDS, default="zoe")
    parser.add_argument("--weights", default=None, help="folder or hub id of the weights")
    args = parser.parse_args(argv)
    annotator = build_depth_annotator(args.backend, args.weights)
    clip = read_clip(args)
    maps = annotator(clip.frames, clip.indices)
    out = write_condition_maps(args.out, maps, clip.indices, clip.fps)
    print(f"wrote {len(maps)} depth maps to {out}/ (preview {out}.mp4)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except VideoEditError as err:  # a clear message, no traceback
        raise SystemExit(f"error: {err}") from None
