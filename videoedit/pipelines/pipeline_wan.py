"""The base of every Wan 2.1 pipeline: video/prompt encoding, the flow-matching velocity with CFG, and plain
text-to-video sampling (the backbone's own cost, against which edits are normalised).

Shapes: frames ``(F, 3, H, W)`` in [-1, 1] with ``F = 4k+1``; latents ``(1, 16, F', h, w)`` with
``F' = (F-1)/4 + 1``, ``h = H/8``, ``w = W/8`` (normalised by the VAE's per-channel mean and std, as
diffusers' Wan pipelines do); prompt embeddings ``(1, L, D)``, zero beyond the prompt's own tokens
(``L`` = 512 for Wan 2.1).

Flow matching (diffusers' convention): ``x_sigma = (1 - sigma) x_0 + sigma * noise``, the transformer predicts
the velocity ``v = noise - x_0``, and an Euler step from ``sigma`` to ``sigma'`` is ``x + (sigma' - sigma) v``.
Timesteps are ``1000 * sigma``.

Wan VACE (a :class:`~diffusers.WanVACETransformer3DModel`): every transformer call also takes the control latents
of a condition video (pose, depth... maps; :meth:`WanVideoEditPipeline.prepare_control`), built once per call of a
pipeline and shared by every velocity of it (both CFG branches, as diffusers' ``WanVACEPipeline``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKLWan,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    WanTransformer3DModel,
    WanVACETransformer3DModel,
)
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

from videoedit.attention.state import StepState
from videoedit.errors import ConfigError, ModelLoadError
from videoedit.io.transforms import tensor_to_frames
from videoedit.models.wan import WAN_TEXT_LENGTH, WanComponents, is_vace
from videoedit.numerics import check_finite

logger = logging.getLogger(__name__)

StepCallback = Callable[["WanVideoEditPipeline", int, float, dict[str, Any]], dict[str, Any] | None]


@dataclass
class WanVideoOutput:
    """``frames``: ``(F, 3, H, W)`` in [-1, 1] (``output_type="pt"``) or ``(F, H, W, 3)`` uint8 (``"np"``);
    ``latents``: ``(1, 16, F', h, w)``."""

    frames: torch.Tensor | np.ndarray | None
    latents: torch.Tensor


@dataclass
class VaceControl:
    """Wan VACE's control input, shared by every transformer call of one pipeline call.

    Attributes:
        latents: ``(1, 2 z + s^2, F', h, w)`` (96 channels for Wan 2.1: ``z = 16`` latent channels, VAE stride
            ``s = 8``): see :meth:`WanVideoEditPipeline.vace_control_latents`.
        scale: ``(len(vace_layers),)``, the weight of the control hint added after each VACE layer (the
            ``controlnet`` group's ``conditioning_scale`` for every layer; VACE's own default is 1.0).
    """

    latents: torch.Tensor
    scale: torch.Tensor


class WanVideoEditPipeline(DiffusionPipeline):
    """Base pipeline; see the module docstring."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(
        self,
        transformer: WanTransformer3DModel | WanVACETransformer3DModel,
        vae: AutoencoderKLWan,
        text_encoder: UMT5EncoderModel,
        tokenizer: PreTrainedTokenizerBase,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ) -> None:
        super().__init__()
        self.register_modules(
            transformer=transformer,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
        )
        self.vae_scale_factor_temporal = int(self.vae.config.scale_factor_temporal)
        self.vae_scale_factor_spatial = int(self.vae.config.scale_factor_spatial)
        self.max_sequence_length = WAN_TEXT_LENGTH

    #: which components this family's pipelines take, by name (``from_components``)
    component_names: ClassVar[tuple[str, ...]] = (
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
    )

    @classmethod
    def from_components(cls, components: WanComponents) -> WanVideoEditPipeline:
        pipe = cls(**{name: getattr(components, name) for name in cls.component_names})
        pipe.max_sequence_length = components.max_sequence_length
        return pipe

    # ---------------------------------------------------------------- shapes
    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.transformer.config.patch_size)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(1, C, F', h, w)`` of a clip of ``num_frames`` frames of ``height x width``."""
        frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        s = self.vae_scale_factor_spatial
        return (1, int(self.transformer.config.in_channels), frames, height // s, width // s)

    def clip_shape(self, latents: torch.Tensor) -> tuple[int, int, int]:
        """``(F, H, W)`` of the clip whose latents are ``(1, C, F', h, w)`` (the inverse of :meth:`latent_shape`)."""
        _, _, f, h, w = latents.shape
        s = self.vae_scale_factor_spatial
        return (f - 1) * self.vae_scale_factor_temporal + 1, h * s, w * s

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        """``(F', h', w')`` transformer tokens of latents ``(1, C, F', h, w)`` (after the patch)."""
        pt, ph, pw = self.patch_size
        _, _, f, h, w = latents.shape
        return f // pt, h // ph, w // pw

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape).to(like.device, like.dtype)
        std = torch.tensor(self.vae.config.latents_std).view(shape).to(like.device, like.dtype)
        return mean, std

    # ---------------------------------------------------------------- encoders
    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """UMT5 embeddings ``(N, L, D)`` of ``prompts`` (cleaned as diffusers' Wan pipeline does), zero beyond
        each prompt's own tokens, ``L = max_sequence_length``."""
        texts = [prompt_clean(p) for p in prompts]
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        lengths = tokens.attention_mask.sum(1)
        for text, n_full in zip(texts, self.tokenizer(texts, truncation=False).input_ids):
            if len(n_full) > self.max_sequence_length:
                logger.warning("prompt truncated to %d tokens: %r", self.max_sequence_length, text)
        device = self._execution_device
        hidden = self.text_encoder(
            tokens.input_ids.to(device), tokens.attention_mask.to(device)
        ).last_hidden_state
        keep = torch.arange(hidden.shape[1], device=device)[None, :] < lengths.to(device)[:, None]
        return (hidden * keep[..., None]).to(self.transformer.dtype)

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(1, 16, F', h, w)`` of frames ``(F, 3, H, W)`` in [-1, 1] (the posterior mode,
        as diffusers' video-to-video pipeline)."""
        video = frames.permute(1, 0, 2, 3)[None].to(self._execution_device, self.vae.dtype)
        latents = self.vae.encode(video).latent_dist.mode()
        mean, std = self._latent_stats(latents)
        return ((latents - mean) / std).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Frames ``(F, 3, H, W)`` in [-1, 1] from normalised latents ``(1, 16, F', h, w)``."""
        z = latents.to(self._execution_device, self.vae.dtype)
        mean, std = self._latent_stats(z)
        video = self.vae.decode(z * std + mean, return_dict=False)[0]
        return video[0].permute(1, 0, 2, 3).float().clamp(-1, 1)

    # ---------------------------------------------------------------- VACE control
    @property
    def vace(self) -> bool:
        """Whether the transformer has VACE's control branch (its calls then need :class:`VaceControl`)."""
        return is_vace(self.transformer)

    @torch.no_grad()
    def vace_control_latents(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """VACE's control latents ``(1, 2 z + s^2, F', h, w)`` of a control video ``(F, 3, H, W)`` in [-1, 1] and its
        mask ``(F, H, W)`` (1: generate, 0: keep; ``None``: all ones, the full mask of pose/depth control), the way
        diffusers' ``WanVACEPipeline`` builds them without reference images (``prepare_video_latents`` then
        ``prepare_masks``)::

            m = [mask > 0.5]
            inactive = E(video * (1 - m)),  reactive = E(video * m)      # E: normalised posterior mode (encode_video)
            packed[s*i + j, f, y, x] = m[f, s*y + i, s*x + j]             # each s x s pixel block -> s^2 channels
            packed = nearest-exact(packed, (F', h, w))                    # latent frame f': source frame (f'+1/2) F/F'
            latents = cat(inactive, reactive, packed)

        With the full mask, ``inactive`` is the latent of an all-zero (grey) video and ``packed`` is all ones.
        """
        frames, _, height, width = video.shape
        m = torch.ones(frames, height, width) if mask is None else (mask > 0.5).float()
        m = m.to(video.device, video.dtype)
        inactive = self.encode_video(video * (1 - m[:, None]))
        reactive = self.encode_video(video * m[:, None])
        s = self.vae_scale_factor_spatial
        h, w = height // s, width // s
        packed = m.reshape(frames, h, s, w, s).permute(2, 4, 0, 1, 3).reshape(s * s, frames, h, w)
        packed = F.interpolate(packed[None].float(), size=(inactive.shape[2], h, w), mode="nearest-exact")
        return torch.cat([inactive, reactive, packed.to(inactive.device)], dim=1)

    @torch.no_grad()
    def prepare_control(
        self,
        control: np.ndarray | torch.Tensor | None,
        conditioning_scale: float,
        num_frames: int,
        height: int,
        width: int,
    ) -> VaceControl | None:
        """The VACE control of a clip of ``num_frames`` frames of ``height x width``, or ``None`` for a plain T2V
        transformer.

        Args:
            control: condition maps ``(F, H, W, 3)`` uint8 (what annotators and data give), or frames
                ``(F, 3, H, W)`` in [-1, 1], with the full mask; ``None`` on VACE: the empty context (a grey video,
                full mask), as diffusers' ``WanVACEPipeline`` without a video (plain text-to-video).
            conditioning_scale: the control hint's weight in every VACE layer.

        Raises:
            ConfigError: maps that do not match the clip, or maps for a transformer without a control branch.
            ModelLoadError: a VACE transformer whose control channels do not fit the VAE.
        """
        if not self.vace:
            if control is not None:
                raise ConfigError(
                    f"{type(self.transformer).__name__} has no control branch: condition maps need Wan VACE "
                    "(model=wan21_vace_1_3b, or model=wan_vace_tiny offline), or use controlnet=none."
                )
            return None
        z, s = int(self.vae.config.z_dim), self.vae_scale_factor_spatial
        channels = int(self.transformer.config.vace_in_channels)
        if channels != 2 * z + s * s:
            raise ModelLoadError(
                f"The VACE transformer takes {channels} control channels but its VAE gives 2 x {z} latent + {s * s} "
                f"mask channels = {2 * z + s * s}: the transformer and the VAE are not from the same model."
            )
        if control is None:
            video = torch.zeros(num_frames, 3, height, width)
        elif isinstance(control, np.ndarray):
            video = torch.from_numpy(np.ascontiguousarray(control)).permute(0, 3, 1, 2).float() / 127.5 - 1
        else:
            video = control.float()
        if tuple(video.shape) != (num_frames, 3, height, width):
            raise ConfigError(
                f"The condition maps are {tuple(video.shape)} (F, 3, H, W) but the clip is "
                f"{(num_frames, 3, height, width)}: give one map per frame, at the clip's size."
            )
        latents = self.vace_control_latents(video)
        scale = torch.full((len(self.transformer.config.vace_layers),), float(conditioning_scale))
        dtype = self.transformer.dtype
        return VaceControl(latents.to(self._execution_device, dtype), scale.to(self._execution_device, dtype))

    # ---------------------------------------------------------------- velocity
    def schedule(
        self, num_inference_steps: int, shift: float | None = None
    ) -> tuple[list[float], list[float]]:
        """``(timesteps, sigmas)`` of the Euler schedule, ``sigmas`` with the final 0 (``len = steps + 1``).

        ``shift`` overrides the scheduler's own (``None``: keep it).
        """
        scheduler = self.scheduler
        if shift is not None and float(shift) != float(scheduler.config.shift):
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, shift=float(shift))
        scheduler.set_timesteps(num_inference_steps)
        return [float(t) for t in scheduler.timesteps], [float(s) for s in scheduler.sigmas]

    def velocity(
        self,
        latents: torch.Tensor,
        timestep: float,
        embeddings: torch.Tensor,
        control: VaceControl | None = None,
    ) -> torch.Tensor:
        """The transformer's velocity ``(B, 16, F', h, w)`` for latents ``(B, ...)`` and embeddings ``(B, L, D)``;
        on VACE with ``control`` (its latents broadcast over the batch)."""
        x = latents.to(self._execution_device, self.transformer.dtype)
        t = torch.full((x.shape[0],), float(timestep), device=x.device, dtype=torch.float32)
        extra = {}
        if self.vace:
            if control is None:
                raise ValueError(
                    "The VACE transformer needs its control latents: pass control=pipe.prepare_control(...) "
                    "(maps=None gives the empty context)."
                )
            extra = {
                "control_hidden_states": control.latents.to(x.device, x.dtype).expand(
                    x.shape[0], -1, -1, -1, -1
                ),
                "control_hidden_states_scale": control.scale.to(x.device, x.dtype),
            }
        elif control is not None:
            raise ValueError(
                f"{type(self.transformer).__name__} has no control branch: control must be None."
            )
        return self.transformer(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=embeddings.to(x.device),
            return_dict=False,
            **extra,
        )[0].float()

    def guided_velocity(
        self,
        latents: torch.Tensor,
        timestep: float,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        guidance_scale: float,
        state: StepState | None = None,
        branch: str = "",
        control: VaceControl | None = None,
    ) -> torch.Tensor:
        """Classifier-free guided velocity, ``v_u + g (v_c - v_u)``; one transformer call per branch (batch 1),
        as diffusers' ``WanPipeline`` (the conditional branch only at ``g == 1``); both branches see the same
        VACE ``control``, as ``WanVACEPipeline``.

        ``state.branches`` is set to ``(<branch>uncond,)`` / ``(<branch>cond,)`` before each call so that
        installed processors know which prompt they see (e.g. ``("target_cond",)``).
        """
        state = state or StepState()
        state.update(num_frames=1, branches=(f"{branch}cond",))
        v = self.velocity(latents, timestep, cond, control)
        if guidance_scale != 1:
            state.update(branches=(f"{branch}uncond",))
            v_uncond = self.velocity(latents, timestep, uncond, control)
            v = v_uncond + guidance_scale * (v - v_uncond)
        return check_finite(v, f"{branch.replace('_', ' ')}velocity", state=state)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        prompt: str,
        num_frames: int,
        height: int,
        width: int,
        negative_prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        generator: torch.Generator | None = None,
        shift: float | None = None,
        state: StepState | None = None,
        callback_on_step_end: StepCallback | None = None,
        output_type: str = "pt",
        control: np.ndarray | torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
        **_: Any,
    ) -> WanVideoOutput:
        """Plain text-to-video sampling from noise (Euler on the flow-matching ODE, CFG as ``WanPipeline``):
        the cost reference of editing methods. On Wan VACE, conditioned on ``control`` maps (see
        :meth:`prepare_control`) at ``controlnet_conditioning_scale``, as ``WanVACEPipeline`` with a full mask.

        Returns:
            :class:`WanVideoOutput` with ``(F, 3, H, W)`` frames in [-1, 1] for ``"pt"``.
        """
        state = state or StepState()
        shape = self.latent_shape(num_frames, height, width)
        noise = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
        latents = noise.to(self._execution_device, torch.float32)
        cond, uncond = self.encode_prompt([prompt]), self.encode_prompt([negative_prompt])
        vace = self.prepare_control(control, controlnet_conditioning_scale, num_frames, height, width)
        timesteps, sigmas = self.schedule(num_inference_steps, shift)
        for i, t in enumerate(self.progress_bar(timesteps)):
            state.update(phase="sample", step_index=i, timestep=t, num_steps=len(timesteps))
            v = self.guided_velocity(latents, t, cond, uncond, guidance_scale, state, control=vace)
            latents = check_finite(latents + (sigmas[i + 1] - sigmas[i]) * v, "latents", state=state)
            if callback_on_step_end is not None:
                update = callback_on_step_end(self, i, t, {"latents": latents})
                if update and "latents" in update:
                    latents = update["latents"]
        return self.finish(latents, output_type)

    def finish(self, latents: torch.Tensor, output_type: str = "pt") -> WanVideoOutput:
        """Decode and package: ``output_type`` ``"pt"`` (floats in [-1, 1]), ``"np"`` (uint8) or ``"latent"``."""
        if output_type == "latent":
            return WanVideoOutput(frames=None, latents=latents)
        frames = self.decode_latents(latents).cpu()
        if output_type == "np":
            return WanVideoOutput(frames=tensor_to_frames(frames), latents=latents)
        return WanVideoOutput(frames=frames, latents=latents)
