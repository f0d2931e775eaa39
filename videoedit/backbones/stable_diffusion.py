"""The ``sd`` family: Stable Diffusion 1.5/2.x UNets (+ ControlNet), real weights and offline twins.

``configs/model/{sd15,sd21}.yaml`` build :class:`StableDiffusion`, ``tiny.yaml`` :class:`TinyStableDiffusion`,
``sd15_random.yaml`` :class:`RandomStableDiffusion15`. Loading is in :mod:`videoedit.models.loading` and
:mod:`videoedit.models.tiny`; the family's base pipeline is
:class:`~videoedit.pipelines.pipeline_video_edit.VideoEditPipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from diffusers import DDIMScheduler

from videoedit.backbones.base import Acceleration, Backbone, VideoShapeRule
from videoedit.models.components import StableDiffusionComponents, sd_ddim_scheduler, sd_shape_rule
from videoedit.models.loading import load_stable_diffusion, read_local_config
from videoedit.models.tiny import build_random_sd15_components, build_tiny_components, tiny_unet_config
from videoedit.models.tokenizer import load_clip_tokenizer

#: SD-1.5/2.x: 4 VAE levels (x8) and 4 UNet levels (x8)
_SD_LEVELS = (0, 0, 0, 0)


class StableDiffusion(Backbone):
    """SD-1.5/2.x weights (+ a ControlNet) from a hub id or a local folder in diffusers layout.

    Args:
        pretrained_model_name_or_path: hub id or folder.
        controlnet: hub id or folder of a ControlNet (the selected ``controlnet`` config's), or ``None``.
        dtype: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` or ``bf16``.
        model_root: a folder searched before the hub (``VIDEOEDIT_MODEL_ROOT``).
        revision, variant: hub revision and weights variant (e.g. ``fp16``).
        acceleration: :class:`~videoedit.backbones.base.Acceleration` switches.
    """

    family: ClassVar[str] = "sd"

    @property
    def accepts_control(self) -> bool:
        return True  # its ControlNet (controlnet=<name>), when one is configured

    def __init__(
        self,
        pretrained_model_name_or_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
        controlnet: str | None = None,
        dtype: str = "auto",
        model_root: str | None = None,
        revision: str | None = None,
        variant: str | None = None,
        acceleration: Acceleration | Mapping | None = None,
    ) -> None:
        super().__init__(acceleration)
        self.pretrained_model_name_or_path = str(pretrained_model_name_or_path)
        self.controlnet = controlnet or None
        self.dtype = dtype
        self.model_root = model_root
        self.revision = revision
        self.variant = variant

    def _config(self, filename: str) -> dict | None:
        return read_local_config(self.pretrained_model_name_or_path, filename, self.model_root, self.revision)

    def shape_rule(self) -> VideoShapeRule:
        """From the model's own ``unet/`` and ``vae/config.json`` when it is on disk, else SD's 64."""
        unet, vae = self._config("unet/config.json"), self._config("vae/config.json")
        return sd_shape_rule(
            (vae or {}).get("block_out_channels", _SD_LEVELS),
            (unet or {}).get("block_out_channels", _SD_LEVELS),
        )

    def scheduler(self) -> DDIMScheduler:
        return sd_ddim_scheduler(self._config("scheduler/scheduler_config.json"))

    def tokenizer(self):
        return load_clip_tokenizer()  # SD-1.5/2.x share CLIP's vocabulary, built offline

    def load(self) -> StableDiffusionComponents:
        return load_stable_diffusion(
            self.pretrained_model_name_or_path,
            controlnet=self.controlnet,
            dtype=self.dtype,
            model_root=self.model_root,
            revision=self.revision,
            variant=self.variant,
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.pretrained_model_name_or_path,
            "controlnet": self.controlnet,
        }


class TinyStableDiffusion(Backbone):
    """The tiny SD-1.5-shaped stack with seeded random weights (:func:`~videoedit.models.tiny.build_tiny_components`).

    Args:
        seed: seeds every weight.
        controlnet: any value adds a tiny random ControlNet (the id is only recorded).
        tokenizer_cache_dir: where the offline CLIP tokenizer files are written.
        acceleration: :class:`~videoedit.backbones.base.Acceleration` switches.
    """

    family: ClassVar[str] = "sd"

    @property
    def accepts_control(self) -> bool:
        return True  # its ControlNet (controlnet=<name>), when one is configured

    def __init__(
        self,
        seed: int = 0,
        controlnet: str | bool | None = None,
        tokenizer_cache_dir: str | None = None,
        acceleration: Acceleration | Mapping | None = None,
    ) -> None:
        super().__init__(acceleration)
        self.seed = int(seed)
        self.controlnet = controlnet
        self.tokenizer_cache_dir = tokenizer_cache_dir

    def shape_rule(self) -> VideoShapeRule:
        return sd_shape_rule((32, 32, 64, 64), tiny_unet_config()["block_out_channels"])

    def scheduler(self) -> DDIMScheduler:
        return sd_ddim_scheduler()

    def tokenizer(self):
        return load_clip_tokenizer(self.tokenizer_cache_dir)

    def load(self) -> StableDiffusionComponents:
        return build_tiny_components(
            seed=self.seed, controlnet=self.controlnet, tokenizer_cache_dir=self.tokenizer_cache_dir
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": "tiny", "seed": self.seed}


class RandomStableDiffusion15(TinyStableDiffusion):
    """Components with SD-1.5's exact shapes and seeded random weights, for speed/memory checks
    (:func:`~videoedit.models.tiny.build_random_sd15_components`); outputs are meaningless."""

    def shape_rule(self) -> VideoShapeRule:
        return sd_shape_rule(_SD_LEVELS, _SD_LEVELS)

    def load(self) -> StableDiffusionComponents:
        return build_random_sd15_components(
            seed=self.seed, controlnet=bool(self.controlnet), tokenizer_cache_dir=self.tokenizer_cache_dir
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": "sd15-shaped random"}
