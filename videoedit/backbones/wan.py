"""The ``wan`` family: Wan 2.1 text-to-video (a video diffusion transformer) through diffusers, and Wan VACE (the
same DiT plus a control branch that takes pose/depth/... condition maps).

``configs/model/wan21_t2v_1_3b.yaml`` builds :class:`Wan21` (hub id or local folder), ``wan21_vace_1_3b.yaml`` the
same with ``vace: true``, ``wan_tiny.yaml`` / ``wan_vace_tiny.yaml`` :class:`TinyWan` (offline twins),
``wan21_1_3b_random.yaml`` :class:`RandomWan13B` (the 1.3B transformer's shapes, random weights, for cost
measurements). Loading is in :mod:`videoedit.models.wan`; the family's base pipeline
is :class:`~videoedit.pipelines.pipeline_wan.WanVideoEditPipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from videoedit.backbones.base import Acceleration, Backbone, VideoShapeRule
from videoedit.errors import ConfigError
from videoedit.models.loading import find_local, read_local_config
from videoedit.models.wan import (
    TINY_TRANSFORMER,
    TINY_VAE,
    WAN21_FLOW_SHIFT,
    WAN21_T2V,
    WanComponents,
    build_random_wan_1_3b,
    build_tiny_wan,
    check_umt5_tokenizer,
    flow_match_scheduler,
    load_wan,
    scheduler_shift,
    tiny_umt5_tokenizer,
    wan_dtype,
    wan_shape_rule,
)

_CONTROL_HINT = (
    "pose/depth/canny control on Wan needs its VACE model: "
    "model=wan21_vace_1_3b (or model=wan_vace_tiny offline)"
)


class Wan21(Backbone):
    """Wan 2.1 T2V (or Wan VACE) weights in diffusers layout, from a hub id or a local folder.

    Args:
        pretrained_model_name_or_path: hub id (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``,
            ``Wan-AI/Wan2.1-VACE-1.3B-diffusers``) or folder.
        dtype: the transformer's and text encoder's: ``auto`` (bf16 on CUDA, fp32 on the CPU), ``fp32``,
            ``fp16``, ``bf16``; the VAE is always fp32.
        model_root: a folder searched before the hub (``VIDEOEDIT_MODEL_ROOT``).
        revision, variant: hub revision and weights variant.
        shift: the flow shift (``None``: the model's scheduler config; 3.0 for 480p, 5.0 for 720p).
        vace: the transformer is Wan VACE's (:class:`~diffusers.WanVACETransformer3DModel`): the run's
            ``controlnet`` group then picks the condition maps its control branch takes.
        acceleration: :class:`~videoedit.backbones.base.Acceleration` switches.
    """

    family: ClassVar[str] = "wan"
    control_hint: ClassVar[str] = _CONTROL_HINT

    def __init__(
        self,
        pretrained_model_name_or_path: str = WAN21_T2V,
        dtype: str = "auto",
        model_root: str | None = None,
        revision: str | None = None,
        variant: str | None = None,
        shift: float | None = None,
        vace: bool = False,
        acceleration: Acceleration | Mapping | None = None,
    ) -> None:
        super().__init__(acceleration)
        self.pretrained_model_name_or_path = str(pretrained_model_name_or_path)
        self.dtype = dtype
        self.model_root = model_root
        self.revision = revision
        self.variant = variant
        self.shift = shift
        self.vace = bool(vace)

    @property
    def accepts_control(self) -> bool:
        return self.vace

    def _config(self, filename: str) -> dict | None:
        return read_local_config(self.pretrained_model_name_or_path, filename, self.model_root, self.revision)

    def shape_rule(self) -> VideoShapeRule:
        """From the model's own ``vae/`` and ``transformer/config.json`` when on disk, else Wan 2.1's."""
        return wan_shape_rule(
            self._config("vae/config.json") or {}, self._config("transformer/config.json") or {}
        )

    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        shift = (
            self.shift
            if self.shift is not None
            else scheduler_shift(self._config("scheduler/scheduler_config.json"))
        )
        return flow_match_scheduler(shift)

    def tokenizer(self):
        folder = find_local(self.pretrained_model_name_or_path, self.model_root, self.revision)
        if folder is None or not (folder / "tokenizer").is_dir():
            return None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), subfolder="tokenizer")
        check_umt5_tokenizer(tokenizer)
        return tokenizer

    def resolve_dtype(self, dtype: str, device: torch.device) -> torch.dtype:
        return wan_dtype(dtype, device)

    def load(self) -> WanComponents:
        return load_wan(
            self.pretrained_model_name_or_path,
            dtype=self.dtype,
            model_root=self.model_root,
            revision=self.revision,
            variant=self.variant,
            shift=self.shift,
            vace=self.vace,
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.pretrained_model_name_or_path,
            "shift": self.shift,
            "vace": self.vace,
        }


class TinyWan(Backbone):
    """Wan's classes from small configs with seeded random weights and a real tokenizer trained offline
    (:func:`~videoedit.models.wan.build_tiny_wan`): every code path of the ``wan`` family, on a CPU, in seconds.

    Args:
        seed: seeds every weight.
        tokenizer_cache_dir: where the offline tokenizer is built once.
        shift: the flow shift (Wan 2.1's 3.0).
        vace: the transformer is a :class:`~diffusers.WanVACETransformer3DModel` (``model=wan_vace_tiny``).
        acceleration: :class:`~videoedit.backbones.base.Acceleration` switches.
    """

    family: ClassVar[str] = "wan"
    control_hint: ClassVar[str] = _CONTROL_HINT

    def __init__(
        self,
        seed: int = 0,
        tokenizer_cache_dir: str | None = None,
        shift: float = WAN21_FLOW_SHIFT,
        vace: bool = False,
        acceleration: Acceleration | Mapping | None = None,
    ) -> None:
        super().__init__(acceleration)
        self.seed = int(seed)
        self.tokenizer_cache_dir = tokenizer_cache_dir
        self.shift = float(shift)
        self.vace = bool(vace)

    @property
    def accepts_control(self) -> bool:
        return self.vace

    def shape_rule(self) -> VideoShapeRule:
        return wan_shape_rule(TINY_VAE, TINY_TRANSFORMER)

    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return flow_match_scheduler(self.shift)

    def tokenizer(self):
        return tiny_umt5_tokenizer(self.tokenizer_cache_dir)

    def resolve_dtype(self, dtype: str, device: torch.device) -> torch.dtype:
        return wan_dtype(dtype, device)

    def load(self) -> WanComponents:
        return build_tiny_wan(self.seed, self.tokenizer_cache_dir, self.shift, vace=self.vace)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": "wan_vace_tiny" if self.vace else "wan_tiny",
            "seed": self.seed,
            "vace": self.vace,
        }


class RandomWan13B(TinyWan):
    """The Wan 2.1 1.3B transformer's exact shapes with seeded random weights (cost measurements only; T2V only:
    ``vace=true`` is refused)."""

    def __init__(
        self,
        seed: int = 0,
        tokenizer_cache_dir: str | None = None,
        shift: float = WAN21_FLOW_SHIFT,
        vace: bool = False,
        acceleration: Acceleration | Mapping | None = None,
    ) -> None:
        super().__init__(seed, tokenizer_cache_dir, shift, vace, acceleration)
        if self.vace:
            raise ConfigError(
                "model.vace=true is not available for the 1.3B-shaped random model (T2V only): use "
                "model=wan_vace_tiny offline, or model=wan21_vace_1_3b with weights."
            )

    def shape_rule(self) -> VideoShapeRule:
        return wan_shape_rule(TINY_VAE, {"patch_size": (1, 2, 2)})

    def load(self) -> WanComponents:
        return build_random_wan_1_3b(self.seed, self.tokenizer_cache_dir, self.shift)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": "wan21-1.3B-shaped random"}
