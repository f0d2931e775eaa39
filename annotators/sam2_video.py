"""SAM-2 video propagation: region masks on every frame from points, boxes or masks on keyframes.

SAM-2 (Ravi et al., 2024; facebookresearch/sam2) is an optional dependency (``pip install -e ".[sam2]"``,
see the README). :class:`Sam2VideoPropagator` builds SAM-2's video predictor from one of the package's own
model configs (``configs/sam2.1/sam2.1_hiera_s.yaml``...) and its checkpoint, adds each region's keyframe
prompts as one SAM-2 object, and propagates them as SAM-2 does: forward from the earliest prompted frame to
the end, then backward from it to the first frame (when it is not the first). Every prompted frame is a
conditioning frame of every step, so keyframes after the start steer the forward pass too.

Precision. SAM-2 stores its memory features in bfloat16 whatever it computes in, and is meant to run under
``torch.autocast(..., dtype=torch.bfloat16)`` (its README and demos do): outside autocast the memory
attention gets bf16 memories and fp32 queries and fails with ``mat1 and mat2 must have the same dtype``
(as soon as one object is tracked before its own prompted frame, e.g. two regions prompted on different
frames). ``dtype="auto"`` runs bf16 autocast on CUDA (official) and fp32 on the CPU, where bf16 is about
30x slower; in fp32 a forward pre-hook on the memory attention casts the stored memories back to the
queries' dtype (they stay bf16-rounded in storage, as in the official code).

SAM-2's video predictor reads a folder of JPEG frames: they are written to a fresh folder under the
configured cache root's scratch folder (``<cache_root>/tmp``, :func:`videoedit.paths.scratch_dir`; never
``$TMPDIR``) and removed afterwards.

Importing ``sam2`` initialises Hydra's global state (``sam2/__init__.py``); :func:`import_sam2` undoes that
when nothing else had initialised it, so tests and the ``run.py`` Hydra app compose their configs as usual.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from annotators.common import file_stamp, module_available, resolve_device
from videoedit.errors import ConfigError, MaskError, ModelLoadError
from videoedit.paths import temporary_directory

logger = logging.getLogger(__name__)

#: what to tell a user without the package
SAM2_INSTALL = (
    'SAM2_BUILD_CUDA=0 pip install --no-build-isolation -c constraints.txt -e ".[sam2]" '
    "(or SAM2_BUILD_CUDA=1 on a machine with nvcc for its optional CUDA post-processing)"
)
SAM2_WEIGHTS = "https://github.com/facebookresearch/sam2#download-checkpoints"
#: ``sam2_dtype`` values
SAM2_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
#: checkpoint file stem -> model config inside the package (SAM-2's own table of released weights)
CHECKPOINT_CONFIGS = {
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def sam2_available() -> bool:
    """Whether the ``sam2`` package is installed (without importing it)."""
    return module_available("sam2")


def import_sam2() -> ModuleType:
    """``import sam2``, leaving Hydra's global state as it was.

    ``sam2/__init__.py`` calls ``initialize_config_module("sam2")`` when Hydra is not initialised; that
    would make every later ``hydra.initialize``/``compose`` of ours fail ("GlobalHydra is already
    initialized"), so it is cleared again here. We never compose through it (see :func:`build_sam2_video_model`).

    Raises:
        ModelLoadError: the package is not installed (the message says how to install it).
    """
    from hydra.core.global_hydra import GlobalHydra

    if not sam2_available():
        raise ModelLoadError(
            f"SAM-2 propagation needs the `sam2` package: {SAM2_INSTALL}; or use propagation=flow (weight-free)."
        )
    hydra = GlobalHydra.instance()
    was_initialized = hydra.is_initialized()
    import sam2

    if not was_initialized and hydra.is_initialized():
        hydra.clear()
    return sam2


def resolve_sam2_config(config: str | None, checkpoint: str | None = None) -> Path:
    """The model config file: a path to a YAML file, a config name of the package
    (``configs/sam2.1/sam2.1_hiera_s.yaml``, ``sam2.1/sam2.1_hiera_s.yaml``, ``sam2.1_hiera_s``), or, when
    ``config`` is empty, the config of a released checkpoint's file name (``sam2.1_hiera_small.pt``).

    Raises:
        ConfigError: nothing matches (the message lists the package's configs).
    """
    package = Path(import_sam2().__file__).parent
    available = sorted(
        p.relative_to(package).as_posix()
        for folder in ("sam2", "sam2.1")
        for p in (package / "configs" / folder).glob("*.yaml")
    )
    if not config:
        stem = Path(checkpoint or "").stem
        if stem not in CHECKPOINT_CONFIGS:
            raise ConfigError(
                f"sam2_config is not set and the checkpoint name {Path(checkpoint or '').name!r} is not one of "
                f"SAM-2's released files ({', '.join(f'{s}.pt' for s in CHECKPOINT_CONFIGS)}): set sam2_config "
                f"to the model config of the checkpoint, one of {available}."
            )
        config = CHECKPOINT_CONFIGS[stem]
    path = Path(config).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    name = config if config.endswith((".yaml", ".yml")) else f"{config}.yaml"
    for candidate in (package / name, package / "configs" / name):
        if candidate.is_file():
            return candidate
    matches = [a for a in available if a.endswith(f"/{Path(name).name}")]
    if len(matches) == 1:
        return package / matches[0]
    raise ConfigError(f"SAM-2 model config {config!r} not found: give a YAML file or one of {available}.")


def build_sam2_video_model(
    config: str | Path,
    checkpoint: str | None,
    device: str = "cpu",
    image_size: int | None = None,
    postprocessing: bool = True,
    overrides: Sequence[str] = (),
    seed: int = 0,
) -> torch.nn.Module:
    """SAM-2's ``SAM2VideoPredictor`` in eval mode, built from a model config file without Hydra's
    global state (the package's ``build_sam2_video_predictor`` composes through it).

    Args:
        config: the model config YAML (:func:`resolve_sam2_config`).
        checkpoint: the ``.pt`` file (``{"model": state_dict}``), or ``"random"``: seeded random weights
            (plumbing tests only: the masks are meaningless).
        image_size: the model's input size (``None``: the config's, 1024 for every released model; a smaller
            one only makes sense with random weights).
        postprocessing: SAM-2's own video-predictor settings (as ``build_sam2_video_predictor``): dynamic
            multimask fallback, binarised click masks in the memory encoder, holes of up to 8 px filled
            (that last step needs SAM-2's CUDA extension ``sam2._C``: without it, skipped as SAM-2 does).
        overrides: ``key=value`` changes of the model config (OmegaConf dot-list, as the package's
            ``hydra_overrides_extra``), e.g. ``model.memory_attention.num_layers=1`` for a small random model.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import_sam2()
    cfg = OmegaConf.load(config)
    if "model" not in cfg:
        raise ConfigError(f"{config} is not a SAM-2 model config (no 'model' node).")
    model_cfg = cfg.model
    model_cfg._target_ = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    if postprocessing:
        extra = model_cfg.get("sam_mask_decoder_extra_args") or {}
        model_cfg.sam_mask_decoder_extra_args = {
            **OmegaConf.to_container(OmegaConf.create(extra)),
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        }
        model_cfg.binarize_mask_from_pts_for_mem_enc = True
        # hole filling runs SAM-2's CUDA connected-components kernel; without it SAM-2 warns on every
        # frame and skips the step, which is what happens here without the warnings
        model_cfg.fill_hole_area = 8 if module_available("sam2._C") else 0
    if image_size is not None:
        if int(image_size) < 64 or int(image_size) % 32:
            raise ConfigError(f"sam2_image_size must be a multiple of 32 (>= 64), got {image_size}.")
        model_cfg.image_size = int(image_size)
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except Exception as err:
            raise ConfigError(f"Bad SAM-2 model config overrides {list(overrides)}: {err}") from err
        model_cfg = cfg.model
    OmegaConf.resolve(cfg)
    if checkpoint == "random":
        torch.manual_seed(seed)
        model = instantiate(model_cfg, _recursive_=True)
    else:
        path = Path(checkpoint or "").expanduser()
        if not checkpoint or not path.is_file():
            raise ModelLoadError(
                f"SAM-2 checkpoint not found: {checkpoint or '(none given)'}. Download the weights matching "
                f"{Path(config).name} ({SAM2_WEIGHTS}) and set sam2_checkpoint, or use propagation=flow."
            )
        model = instantiate(model_cfg, _recursive_=True)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state), strict=True)
        except Exception as err:
            raise ModelLoadError(
                f"Could not load SAM-2 weights {path} into {Path(config).name} ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:300]}). Check that sam2_config is the config of this checkpoint."
            ) from err
    return model.to(device).eval()


@dataclass
class Sam2Prompt:
    """Everything one region gets on one keyframe (prompts of the same region and frame merged).

    Attributes:
        position: index of the keyframe in the frames given to :meth:`Sam2VideoPropagator.propagate_prompts`.
        points: ``(P, 2)`` float ``(x, y)`` pixels, or ``None``.
        labels: ``(P,)`` int (1 inside, 0 outside), or ``None``.
        box: ``(4,)`` ``x0, y0, x1, y1`` pixels, or ``None``.
        mask: ``(H, W)`` bool, or ``None`` (a mask wins over points and a box on the same keyframe, as in
            the flow propagation: SAM-2 cannot take both on one frame).
    """

    position: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


def merge_prompts(region: str, prompts: Sequence[Mapping[str, Any]]) -> list[Sam2Prompt]:
    """Merge one region's ``{"position", "points", "labels", "box", "mask"}`` dicts per keyframe.

    Points of one keyframe are concatenated, masks united; two boxes on one keyframe are an error (SAM-2
    takes one box per object and frame).
    """
    merged: dict[int, Sam2Prompt] = {}
    for p in prompts:
        pos = int(p["position"])
        cur = merged.setdefault(pos, Sam2Prompt(pos))
        points = p.get("points")
        if points is not None and len(points):
            pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            labels = p.get("labels")
            lab = np.ones(len(pts), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
            if len(lab) != len(pts):
                raise MaskError(
                    f"Region '{region}', keyframe {pos}: {len(pts)} points but {len(lab)} labels."
                )
            cur.points = pts if cur.points is None else np.concatenate([cur.points, pts])
            cur.labels = lab if cur.labels is None else np.concatenate([cur.labels, lab])
        if p.get("box") is not None:
            if cur.box is not None:
                raise MaskError(
                    f"Region '{region}' has two boxes on keyframe {pos}: SAM-2 takes one box per region and "
                    "frame (use points for more, or a mask image)."
                )
            cur.box = np.asarray(p["box"], dtype=np.float32).reshape(4)
        if p.get("mask") is not None:
            mask = np.asarray(p["mask"], dtype=bool)
            cur.mask = mask if cur.mask is None else cur.mask | mask
    return [merged[k] for k in sorted(merged)]


@contextlib.contextmanager
def memory_dtype_guard(model: torch.nn.Module) -> Iterator[None]:
    """Cast the memories SAM-2 stores in bf16 to the dtype of the current frame's features before its
    memory attention runs (a forward pre-hook, removed on exit). Under autocast it changes nothing."""

    def cast(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        curr = kwargs.get("curr", args[0] if args else None)
        ref = curr[0] if isinstance(curr, (list, tuple)) else curr
        if not isinstance(ref, torch.Tensor):
            return args, kwargs
        for key in ("memory", "memory_pos"):
            value = kwargs.get(key)
            if isinstance(value, torch.Tensor) and value.dtype != ref.dtype:
                kwargs[key] = value.to(ref.dtype)
        return args, kwargs

    handle = model.memory_attention.register_forward_pre_hook(cast, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _autocast(device: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@dataclass
class PropagationPasses:
    """Frames visited by the last :meth:`Sam2VideoPropagator.propagate_prompts` (for logs and tests)."""

    forward: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)


class Sam2VideoPropagator:
    """SAM-2's video predictor over a clip (see the module docstring).

    Args:
        config: SAM-2 model config (a YAML file or a name in the package, e.g.
            ``configs/sam2.1/sam2.1_hiera_s.yaml``); empty: inferred from the checkpoint's file name.
        checkpoint: the matching ``.pt`` file; ``"random"``: random weights (tests only).
        device: ``auto``, ``cuda``, ``cpu``.
        dtype: ``auto`` (bf16 autocast on CUDA as SAM-2's own demos, fp32 on the CPU), ``bfloat16``,
            ``float16`` (autocast) or ``float32``.
        image_size: SAM-2's input size; ``None``: the config's (1024).
        cache_root: the JPEG frames for the predictor go to a fresh folder under ``<cache_root>/tmp``, removed
            afterwards (:func:`videoedit.paths.scratch_dir`; ``None``: ``$VIDEOEDIT_CACHE_ROOT`` or
            ``~/.cache/videoedit``).
        offload_video_to_cpu: keep the decoded frames on the CPU (SAM-2's option; saves GPU memory).
        model_overrides: ``key=value`` changes of the model config (see :func:`build_sam2_video_model`).
        jpeg_quality: quality of the scratch JPEGs (SAM-2 reads JPEG folders only).

    Raises:
        ModelLoadError: ``sam2`` is not installed or the checkpoint is missing.
        ConfigError: an unknown dtype or model config.
    """

    def __init__(
        self,
        config: str | None = None,
        checkpoint: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        image_size: int | None = None,
        cache_root: str | Path | None = None,
        offload_video_to_cpu: bool = False,
        model_overrides: Sequence[str] = (),
        jpeg_quality: int = 95,
    ) -> None:
        if dtype != "auto" and dtype not in SAM2_DTYPES:
            raise ConfigError(f"sam2_dtype must be auto, {', '.join(SAM2_DTYPES)}; got {dtype!r}.")
        import_sam2()  # the install hint, before anything else
        if checkpoint != "random" and (not checkpoint or not Path(checkpoint).expanduser().is_file()):
            raise ModelLoadError(
                f"SAM-2 checkpoint not found: {checkpoint or '(none given)'}. Download SAM-2 weights "
                f"({SAM2_WEIGHTS}) and set sam2_checkpoint (and sam2_config unless the file keeps its released "
                "name), or use propagation=flow (weight-free)."
            )
        self.config_path = resolve_sam2_config(config, checkpoint)
        self.config, self.checkpoint = config, checkpoint
        self.device = resolve_device(device)
        if dtype == "auto":
            dtype = "bfloat16" if torch.device(self.device).type == "cuda" else "float32"
        self.dtype_name = dtype
        self.dtype = SAM2_DTYPES[dtype]
        self.image_size = None if image_size is None else int(image_size)
        self.cache_root = Path(cache_root) if cache_root else None
        self.offload_video_to_cpu = bool(offload_video_to_cpu)
        self.model_overrides = [str(o) for o in model_overrides or ()]
        self.jpeg_quality = int(jpeg_quality)
        self._model: torch.nn.Module | None = None
        self.last_passes = PropagationPasses()

    def settings(self) -> dict[str, Any]:
        """What determines the masks (annotation-cache key)."""
        return {
            "propagation": "sam2",
            "config": self.config_path.name,
            "checkpoint": file_stamp(self.checkpoint),
            "dtype": self.dtype_name,
            "image_size": self.image_size,
            "model_overrides": self.model_overrides,
            "jpeg_quality": self.jpeg_quality,
        }

    @property
    def model(self) -> torch.nn.Module:
        """The predictor (built on first use)."""
        if self._model is None:
            self._model = build_sam2_video_model(
                self.config_path,
                self.checkpoint,
                self.device,
                self.image_size,
                overrides=self.model_overrides,
            )
        return self._model

    @contextlib.contextmanager
    def _frame_folder(self, frames: np.ndarray) -> Iterator[Path]:
        from PIL import Image

        with temporary_directory("sam2-frames-", self.cache_root) as tmp:
            folder = Path(tmp)
            for i, frame in enumerate(frames):  # the predictor reads <int>.jpg, sorted by the number
                Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=self.jpeg_quality)
            yield folder

    @torch.inference_mode()
    def propagate_prompts(
        self,
        frames: np.ndarray,
        prompts: Sequence[Sequence[Mapping[str, Any]]],
        names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Masks ``(F, R, H, W)`` bool from per-region keyframe prompts.

        Args:
            frames: ``(F, H, W, 3)`` uint8.
            prompts: for each region, a list of ``{"position", "points", "labels", "box", "mask"}``
                (position in ``frames``; pixel coordinates of ``frames``; mask ``(H, W)`` bool).
            names: the regions' names, for messages (default ``#0``, ``#1``, ...).

        Raises:
            MaskError: a region without prompts, a position outside the frames, a mask of another size.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        num, height, width = frames.shape[:3]
        names = list(names) if names is not None else [f"#{r}" for r in range(len(prompts))]
        regions = [merge_prompts(name, region) for name, region in zip(names, prompts, strict=True)]
        for name, region in zip(names, regions):
            if not region:
                raise MaskError(
                    f"Region '{name}' has no keyframe prompt: SAM-2 needs at least one per region."
                )
            for p in region:
                if not 0 <= p.position < num:
                    raise MaskError(f"Region '{name}': keyframe position {p.position} outside 0..{num - 1}.")
                if p.mask is not None and p.mask.shape != (height, width):
                    raise MaskError(
                        f"Region '{name}', keyframe {p.position}: mask is {p.mask.shape} but frames are "
                        f"{(height, width)}."
                    )
        out = np.zeros((num, len(regions), height, width), dtype=bool)
        model = self.model
        positions = [p.position for region in regions for p in region]
        passes = PropagationPasses()
        with (
            self._frame_folder(frames) as folder,
            _autocast(self.device, self.dtype),
            memory_dtype_guard(model),
        ):
            state = model.init_state(video_path=str(folder), offload_video_to_cpu=self.offload_video_to_cpu)
            for r, region in enumerate(regions):
                for p in region:
                    if p.mask is not None:
                        model.add_new_mask(state, frame_idx=p.position, obj_id=r, mask=p.mask)
                    else:
                        model.add_new_points_or_box(
                            state,
                            frame_idx=p.position,
                            obj_id=r,
                            points=p.points,
                            labels=p.labels,
                            box=p.box,
                        )
            # SAM-2's own order: forward from the earliest prompted frame to the end, then backward from it
            # to frame 0 (SAM-2 skips that pass when the earliest prompted frame is frame 0)
            for reverse, visited in ((False, passes.forward), (True, passes.backward)):
                for t, obj_ids, logits in model.propagate_in_video(state, reverse=reverse):
                    visited.append(int(t))
                    masks = (logits[:, 0] > 0).cpu().numpy()
                    for obj, mask in zip(obj_ids, masks):
                        out[int(t), int(obj)] = mask
        self.last_passes = passes
        logger.info(
            "SAM-2: %d regions over %d frames from keyframes %s (%s)",
            len(regions),
            num,
            sorted(set(positions)),
            self.dtype_name,
        )
        return out
