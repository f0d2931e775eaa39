"""The backbone seam: what a method needs from a model family, and what a run can check before loading it.

Two objects, so that every check that can be made from the config comes before any weight is read:

* :class:`Backbone` is what ``configs/model/<name>.yaml`` instantiates. Building it loads nothing: it holds
  the model id or folder and its options, names its ``family`` (``"sd"``, ``"wan"``...), says which clips it
  can take (:class:`VideoShapeRule`, read from the config or a local ``config.json``), gives its scheduler
  (a small config file) for schedule checks, and :meth:`Backbone.load` returns the components.
* :class:`Components` is the loaded set of modules: moved, cast and optimised as a whole, fingerprinted for
  the caches, and :meth:`Components.pipeline` gives the family's base pipeline over them.

Methods name the families they run on (``EditMethod.backbones``); an unsupported pair stops at config-check
time with :func:`check_supported`. Shared code (data, io, motion, result tree, sweeps, reports, metrics)
never asks which family it has: a new backbone (CogVideoX, LTX, HunyuanVideo...) is a new module here with
its ``Backbone`` and ``Components`` subclasses, its base pipeline, and its model configs.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from videoedit.errors import ConfigError, ResolutionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoShapeRule:
    """Which clips a backbone takes: ``num_frames = frame_multiple * k + frame_offset`` (k >= 0) and both
    sides multiples of ``size_multiple``.

    SD-1.5 (frame by frame): any frame count, sides multiples of 64 (VAE x8, UNet x8). Wan 2.1: the VAE
    compresses time by 4 and keeps the first frame, so 4k+1 frames; sides multiples of 16 (VAE x8, patch x2).
    """

    size_multiple: int
    frame_multiple: int = 1
    frame_offset: int = 0
    what: str = "this model"

    def frames_ok(self, num_frames: int) -> bool:
        return (
            num_frames >= max(1, self.frame_offset)
            and (num_frames - self.frame_offset) % self.frame_multiple == 0
        )

    def nearest_frames(self, num_frames: int) -> list[int]:
        """The valid frame counts next to ``num_frames`` (below first), at least one."""
        m, o = self.frame_multiple, self.frame_offset
        below = o + ((num_frames - o) // m) * m
        candidates = [c for c in (below, below + m) if c >= max(1, o)]
        return candidates or [max(1, o) if o else m]

    def check(self, num_frames: int, height: int, width: int, data: Mapping | None = None) -> None:
        """Raise :class:`ResolutionError` naming the nearest valid values and the data config's own keys."""
        keys = _data_keys(data)
        if not self.frames_ok(num_frames):
            options = " or ".join(str(n) for n in self.nearest_frames(num_frames))
            rule = (
                f"{self.frame_multiple}k+{self.frame_offset}"
                if self.frame_offset
                else f"a multiple of {self.frame_multiple}"
            )
            raise ResolutionError(
                f"The clip has {num_frames} frames, but {self.what} needs {rule} frames (its VAE compresses time by "
                f"{self.frame_multiple}). Use {keys['frames']}={options.split(' or ')[0]} (nearest valid: {options})."
            )
        m = self.size_multiple
        if height % m or width % m:
            ok_h = max(m, height // m * m)
            ok_w = max(m, width // m * m)
            raise ResolutionError(
                f"Frames are {width}x{height} (WxH) after resizing, but {self.what} needs both sides to be multiples "
                f"of {m}. Use {keys['height']}={ok_h} {keys['width']}={ok_w}"
                + (f", or {keys['multiple']}={m}" if keys.get("multiple") else "")
                + "."
            )


def _data_keys(data: Mapping | None) -> dict[str, str]:
    """Override names for the frame count and size in the chosen data config (so a hint can be pasted)."""
    data = data or {}
    keys = {"frames": "data.num_frames", "height": "data.height", "width": "data.width"}
    resize = data.get("resize") if isinstance(data, Mapping) else None
    if isinstance(resize, Mapping):
        keys.update(height="data.resize.height", width="data.resize.width")
        if str(resize.get("mode", "")) == "keep_aspect":
            keys["multiple"] = "data.resize.multiple"
    return keys


class Components(ABC):
    """Loaded modules of one backbone family.

    Subclasses are dataclasses holding their modules; they set :attr:`family` and provide
    :meth:`shape_rule` and :meth:`pipeline` (the family's base pipeline, which every method pipeline of the
    family subclasses, with ``from_components`` and ``sample``).

    Attributes:
        fingerprint: identifies the weights (hub id + revision, local folder + file stats, or a tiny
            model's config and seed); it enters cache keys, so two runs share an inversion only when they
            use the same weights.
        info: facts for ``metrics.json``.
    """

    family: ClassVar[str] = ""
    #: modules kept in fp32 whatever the run's dtype (e.g. Wan's VAE, as diffusers recommends)
    fp32_modules: ClassVar[tuple[str, ...]] = ()
    fingerprint: str
    info: dict[str, Any]

    @property
    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """The ``nn.Module`` components by name (what is moved, cast and offloaded)."""

    @property
    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The network whose attention processors methods install (a UNet, a transformer)."""

    @abstractmethod
    def shape_rule(self) -> VideoShapeRule:
        """The clips these components can take."""

    @abstractmethod
    def pipeline(self) -> Any:
        """The family's base pipeline over these components (plain sampling, encoders, the denoiser call)."""

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Components:
        """Move every module, casting those whose dtype differs (except :attr:`fp32_modules`).

        A cast keeps the layers a model lists in ``_keep_in_fp32_modules`` in fp32, as diffusers'
        ``from_pretrained(torch_dtype=...)`` does (Wan's time embedder and norms).
        """
        for name, module in self.modules.items():
            target = torch.float32 if name in self.fp32_modules else dtype
            if target is not None and next(module.parameters()).dtype != target:
                cast_keeping_fp32_layers(module, device, target)
            else:  # a dtype argument, even an unchanged one, makes diffusers warn about fp32 modules
                module.to(device)
        return self

    def dtypes(self) -> dict[str, str]:
        """The parameter dtype of each module (for ``metrics.json``)."""
        return {n: str(next(m.parameters()).dtype).replace("torch.", "") for n, m in self.modules.items()}


def cast_keeping_fp32_layers(module: torch.nn.Module, device: torch.device | str, dtype: torch.dtype) -> None:
    """``module.to(device, dtype)``, with the sub-modules named in its ``_keep_in_fp32_modules`` kept in fp32.

    Goes through ``torch.nn.Module.to``: diffusers' override warns on every cast of a model, even one with no
    fp32 layers.
    """
    torch.nn.Module.to(module, device, dtype)
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    if dtype in (torch.float16, torch.bfloat16) and keep:
        for name, sub in module.named_modules():
            if any(k in name.split(".") for k in keep):
                sub.to(torch.float32)


@dataclass
class Acceleration:
    """What diffusers offers to trade speed for memory, applied once the pipeline exists.

    Attributes:
        cpu_offload: ``model`` keeps only the running component on the GPU (diffusers'
            ``enable_model_cpu_offload``: the components move in the order of the pipeline's
            ``model_cpu_offload_seq``), ``sequential`` offloads layer by layer (slowest, least memory), ``none``.
        vae_slicing: decode/encode one frame chunk at a time in the VAE.
        vae_tiling: decode/encode large frames in overlapping tiles (VAEs that support it).
        compile: ``torch.compile`` the denoiser (first steps are slow while it compiles).
    """

    cpu_offload: str = "none"
    vae_slicing: bool = False
    vae_tiling: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.cpu_offload not in ("none", "model", "sequential"):
            raise ConfigError(
                f"model.acceleration.cpu_offload must be none, model or sequential, got {self.cpu_offload!r}."
            )

    def apply(self, pipe, components: Components, device: torch.device) -> None:
        """Apply the switches to ``pipe`` (a diffusers pipeline built from ``components``)."""
        if self.cpu_offload != "none":
            if device.type != "cuda":
                logger.warning(
                    "model.acceleration.cpu_offload=%s needs CUDA: ignored on %s", self.cpu_offload, device
                )
            elif self.cpu_offload == "model":
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.enable_sequential_cpu_offload(device=device)
        vae = components.modules.get("vae")
        if vae is not None:
            if self.vae_slicing and hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
            if self.vae_tiling:
                if not hasattr(vae, "enable_tiling"):
                    raise ConfigError(
                        f"{type(vae).__name__} has no tiled mode: set model.acceleration.vae_tiling=false."
                    )
                vae.enable_tiling()
        if self.compile:
            components.denoiser.compile()

    def describe(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Backbone(ABC):
    """A backbone as configured: cheap to build, loads nothing until :meth:`load`.

    Subclasses take the config's keys as constructor arguments (``_target_`` configs) and set
    :attr:`family`.
    """

    family: ClassVar[str] = ""
    #: how to get a backbone of this family that takes condition maps, for the message logged when the
    #: ``controlnet`` group is ignored (e.g. Wan: its VACE model)
    control_hint: ClassVar[str] = ""

    def __init__(self, acceleration: Acceleration | Mapping | None = None) -> None:
        if isinstance(acceleration, Acceleration):
            self.acceleration = acceleration
        else:
            try:
                self.acceleration = Acceleration(**dict(acceleration or {}))
            except TypeError as err:
                raise ConfigError(
                    f"Bad model.acceleration settings {dict(acceleration or {})}: {err}. Keys: cpu_offload, "
                    "vae_slicing, vae_tiling, compile."
                ) from err

    @property
    def accepts_control(self) -> bool:
        """Whether the backbone takes condition maps (pose, depth...) selected by the ``controlnet`` config group:
        through a ControlNet (SD) or a control branch inside the denoiser (Wan VACE). When it does not, the group
        is ignored and no annotator runs."""
        return False

    @abstractmethod
    def shape_rule(self) -> VideoShapeRule:
        """The clips this backbone can take, from the config (and a local model's ``config.json``)."""

    @abstractmethod
    def scheduler(self):
        """The editing scheduler, built from its small config file (no weights), for schedule checks."""

    @abstractmethod
    def load(self) -> Components:
        """Load (or build) the components. Missing weights raise ``ModelLoadError`` within seconds."""

    def tokenizer(self) -> Any | None:
        """The prompt tokenizer when it is available without loading weights (for prompt checks before the
        model loads), else ``None``."""
        return None

    def resolve_dtype(self, dtype: str, device: torch.device) -> torch.dtype:
        """The compute dtype for ``dtype`` (``auto``: the family's choice on ``device``)."""
        from videoedit.models.loading import resolve_dtype

        return resolve_dtype(dtype, device)

    def describe(self) -> dict[str, Any]:
        """What the run's ``metrics.json`` says about the configured backbone (before loading)."""
        return {"family": self.family, "acceleration": self.acceleration.describe()}


def check_supported(
    method: Any, backbone: Backbone, known: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Raise :class:`ConfigError` unless ``method`` runs on ``backbone``'s family.

    Args:
        method: an edit method (its class attribute ``backbones`` lists the families it runs on).
        backbone: the configured backbone.
        known: ``{family: [model config names]}`` to suggest (e.g. from :func:`model_configs_by_family`).
    """
    families = tuple(getattr(method, "backbones", ()))
    if backbone.family in families:
        return
    name = getattr(method, "name", type(method).__name__)
    suggestions = []
    for family in families:
        models = list((known or {}).get(family, ()))
        suggestions.append(f"{family} ({', '.join('model=' + m for m in models)})" if models else family)
    raise ConfigError(
        f"method={name} does not run on the '{backbone.family}' backbone ({type(backbone).__name__}): it supports "
        f"{' or '.join(suggestions) or 'no backbone'}. Choose one of those models, or a method for "
        f"'{backbone.family}'."
    )


@contextlib.contextmanager
def preserved_rng() -> Any:
    """Restore torch's global CPU random state on exit (building seeded random models must not move it)."""
    state = torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
