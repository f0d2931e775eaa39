"""The shared base of every editing pipeline: encoding, ControlNet-conditioned noise prediction,
DDIM inversion and the classifier-free-guidance DDIM sampling loop.

Shapes: frames ``(F, 3, H, W)`` in [-1, 1]; latents ``(F, 4, H/8, W/8)`` (frames folded into the batch);
text embeddings ``(N, 77, D)``; ControlNet conditions ``(F, 3, H, W)`` in [0, 1].
Method pipelines (``pipeline_<method>.py``) subclass :class:`VideoEditPipeline` and write their own
``__call__`` from these pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from videoedit.attention.state import StepState
from videoedit.inversion.ddim import (
    InversionOutput,
    NoiseTimestep,
    ddim_invert,
    inversion_grid,
    sampling_timesteps,
)
from videoedit.io.transforms import check_divisible, tensor_to_frames
from videoedit.models.components import StableDiffusionComponents
from videoedit.numerics import check_finite

logger = logging.getLogger(__name__)

StepCallback = Callable[["VideoEditPipeline", int, int, dict[str, Any]], dict[str, Any] | None]


@dataclass
class GuidanceEmbeddings:
    """Text conditions for classifier-free guidance, one row each ``(1, 77, D)``.

    ``controlnet_uncond`` / ``controlnet_cond`` default to the UNet's; VideoGrain gives the ControlNet
    other ones (the negative prompt reaches only the ControlNet there).
    """

    uncond: torch.Tensor
    cond: torch.Tensor
    controlnet_uncond: torch.Tensor | None = None
    controlnet_cond: torch.Tensor | None = None

    def batch(
        self, num_frames: int, branches: Sequence[str] = ("uncond", "cond")
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """UNet and ControlNet text batches ``(len(branches) * F, 77, D)``, branch-major."""
        unet_rows = {"uncond": self.uncond, "cond": self.cond}
        cn_rows = {
            "uncond": self.uncond if self.controlnet_uncond is None else self.controlnet_uncond,
            "cond": self.cond if self.controlnet_cond is None else self.controlnet_cond,
        }
        text = torch.cat([unet_rows[b].expand(num_frames, -1, -1) for b in branches])
        cn_text = torch.cat([cn_rows[b].expand(num_frames, -1, -1) for b in branches])
        return text, cn_text


@dataclass
class LatentBlend:
    """Keep pixels outside ``mask`` equal to the source, as VideoGrain does after every step.

    ``latents = latents * mask + source_t * (1 - mask)``, where ``source_t`` is the clean source
    latent re-noised with fresh noise to level ``t`` (``source="noised"``, official: the level of the
    step just taken, not the one reached), or the inverted latent at the level reached
    (``source="inverted"``: reproduces the source exactly outside the mask).

    Attributes:
        mask: ``(F, 1, h, w)`` float in [0, 1] at latent resolution (1 = editable).
        source_latents: ``(F, 4, h, w)`` clean latents of the source frames.
        inversion: the inversion (needed for ``source="inverted"``).
    """

    mask: torch.Tensor
    source_latents: torch.Tensor
    source: str = "noised"
    inversion: InversionOutput | None = None

    def __call__(
        self,
        scheduler: DDIMScheduler,
        latents: torch.Tensor,
        t: int,
        t_next: int | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        mask = self.mask.to(latents)
        if self.source == "inverted":
            if self.inversion is None:
                raise ValueError("LatentBlend(source='inverted') needs the inversion")
            src = self.source_latents if t_next is None else self.inversion.at(t_next)
            src = src.to(latents)
        elif self.source == "noised":
            noise = torch.randn(
                latents.shape, generator=generator, device=generator.device if generator else "cpu"
            )
            src = scheduler.add_noise(
                self.source_latents.to(latents), noise.to(latents), torch.tensor([int(t)])
            )
        else:
            raise ValueError(f"LatentBlend.source must be 'noised' or 'inverted', got {self.source!r}")
        return latents * mask + src * (1 - mask)


@dataclass
class VideoEditOutput:
    """``frames``: ``(F, 3, H, W)`` in [-1, 1] (``output_type="pt"``) or ``(F, H, W, 3)`` uint8 (``"np"``)."""

    frames: torch.Tensor | np.ndarray | None
    latents: torch.Tensor


class VideoEditPipeline(DiffusionPipeline):
    """Base pipeline; see the module docstring."""

    model_cpu_offload_seq = "text_encoder->controlnet->unet->vae"
    _optional_components: ClassVar[list[str]] = ["controlnet"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: DDIMScheduler,
        controlnet: ControlNetModel | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            controlnet=controlnet,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @classmethod
    def from_components(cls, components: StableDiffusionComponents) -> VideoEditPipeline:
        return cls(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            scheduler=components.scheduler,
            controlnet=components.controlnet,
        )

    # ---------------------------------------------------------------- checks
    @property
    def size_multiple(self) -> int:
        """Frame sides must be multiples of this (64 for SD: VAE x8, UNet x8)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def check_frame_size(self, height: int, width: int) -> None:
        check_divisible(height, width, self.size_multiple, "this UNet")

    # ---------------------------------------------------------------- encoders
    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings ``(N, 77, D)`` of ``prompts`` (padded to 77 tokens, truncated beyond)."""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        full = self.tokenizer(list(prompts), padding=False, truncation=False).input_ids
        for p, ids in zip(prompts, full):
            if len(ids) > self.tokenizer.model_max_length:
                logger.warning("prompt truncated to %d tokens: %r", self.tokenizer.model_max_length, p)
        return self.text_encoder(tokens.input_ids.to(self._execution_device))[0]

    @torch.no_grad()
    def encode_frames(
        self,
        frames: torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk_size: int = 8,
    ) -> torch.Tensor:
        """VAE latents ``(F, 4, h, w)`` (scaled) of frames ``(F, 3, H, W)`` in [-1, 1].

        ``sample=True`` draws from the posterior (the official VideoGrain inversion does); otherwise
        its mean is used (TokenFlow, and VideoGrain's blending source).
        """
        out = []
        for chunk in frames.split(chunk_size):
            dist = self.vae.encode(chunk.to(self._execution_device, self.vae.dtype)).latent_dist
            out.append(dist.sample(generator) if sample else dist.mode())
        return torch.cat(out) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """Frames ``(F, 3, H, W)`` in [-1, 1] from latents ``(F, 4, h, w)``."""
        out = []
        for chunk in latents.split(chunk_size):
            x = chunk.to(self._execution_device, self.vae.dtype) / self.vae.config.scaling_factor
            out.append(self.vae.decode(x, return_dict=False)[0].float().clamp(-1, 1))
        return torch.cat(out)

    def prepare_control(self, control: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
        """ControlNet input ``(F, 3, H, W)`` in [0, 1] from ``(F, H, W, 3)`` uint8 maps (or pass-through)."""
        if control is None or self.controlnet is None:
            return None
        if isinstance(control, np.ndarray):
            control = torch.from_numpy(control).permute(0, 3, 1, 2).float() / 255.0
        return control.to(self._execution_device, self.controlnet.dtype)

    # ---------------------------------------------------------------- noise prediction
    def predict_noise(
        self,
        latents: torch.Tensor,
        t: int | torch.Tensor,
        text: torch.Tensor,
        control: torch.Tensor | None = None,
        controlnet_text: torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
    ) -> torch.Tensor:
        """UNet noise prediction ``(B, 4, h, w)`` with ControlNet residuals when ``control`` is given.

        ``latents (B, 4, h, w)``, ``text (B, 77, D)``, ``control (B, 3, H, W)``: the batch is whatever
        the caller built (CFG branches x frames).
        """
        down, mid = None, None
        if control is not None and self.controlnet is not None and controlnet_conditioning_scale != 0:
            down, mid = self.controlnet(
                latents,
                t,
                encoder_hidden_states=text if controlnet_text is None else controlnet_text,
                controlnet_cond=control,
                conditioning_scale=controlnet_conditioning_scale,
                return_dict=False,
            )
        return self.unet(
            latents,
            t,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]

    def guided_noise(
        self,
        latents: torch.Tensor,
        t: int,
        embeddings: GuidanceEmbeddings,
        guidance_scale: float,
        control: torch.Tensor | None,
        controlnet_conditioning_scale: float,
        state: StepState,
        branches: tuple[str, ...] | None = None,
    ) -> torch.Tensor:
        """Classifier-free guided noise for ``latents (F, 4, h, w)``; the batch is ``[uncond | cond]``.

        With ``guidance_scale == 1`` only the conditional branch is computed (same result, half the work)
        unless ``branches=("uncond", "cond")`` asks for both (when processors record both branches).
        """
        num_frames = latents.shape[0]
        if branches is None:
            branches = ("cond",) if guidance_scale == 1 else ("uncond", "cond")
        elif guidance_scale != 1 and tuple(branches) != ("uncond", "cond"):
            raise ValueError(
                f"classifier-free guidance needs the branches ('uncond', 'cond'), got {branches}"
            )
        state.update(num_frames=num_frames, branches=branches, latent_size=tuple(latents.shape[-2:]))
        text, cn_text = embeddings.batch(num_frames, branches)
        n = len(branches)
        control_in = None if control is None else control.repeat(n, 1, 1, 1)
        eps = self.predict_noise(
            latents.repeat(n, 1, 1, 1), t, text, control_in, cn_text, controlnet_conditioning_scale
        )
        if n > 1:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        return check_finite(eps, "noise prediction", state=state)

    # ---------------------------------------------------------------- inversion
    @torch.no_grad()
    def invert(
        self,
        frames: torch.Tensor,
        prompt: str = "",
        control: np.ndarray | torch.Tensor | None = None,
        num_inference_steps: int = 50,
        num_inversion_steps: int | None = None,
        guidance_scale: float = 1.0,
        negative_prompt: str = "",
        controlnet_conditioning_scale: float = 1.0,
        noise_timestep: NoiseTimestep = "current",
        vae_sample: bool = False,
        generator: torch.Generator | None = None,
        frame_batch_size: int | None = None,
        state: StepState | None = None,
        final_feature_pass: bool = False,
        branches: tuple[str, ...] | None = None,
    ) -> InversionOutput:
        """DDIM-invert ``frames (F, 3, H, W)``, keeping the latents at every editing timestep.

        Args:
            prompt: the source prompt (official VideoGrain inversion: guidance 1, i.e. only this prompt).
            control: ControlNet maps ``(F, H, W, 3)`` uint8 (or prepared ``(F, 3, H, W)`` floats).
            num_inference_steps: the editing schedule; its timesteps are kept.
            num_inversion_steps: a finer inversion schedule (TokenFlow: 500); ``None`` = the editing one.
            guidance_scale: CFG during inversion (1 = conditional branch only).
            noise_timestep: ``"current"`` (VideoGrain) or ``"next"`` (TokenFlow); see ``inversion/ddim.py``.
            vae_sample: encode with a posterior sample (official VideoGrain) instead of its mean.
            frame_batch_size: frames per UNet call; ``None`` = all at once (required by methods whose
                attention spans frames).
            state: the step state shared with installed processors.
            final_feature_pass: run the noise predictor once more on the final latent at the noisiest
                timestep (its output is discarded; installed processors can record features there).
            branches: the CFG branches to run (default: only ``cond`` at guidance 1); the official
                VideoGrain inversion runs ``("uncond", "cond")`` with guidance 1.

        Returns:
            :class:`InversionOutput` with latents on the CPU at the editing timesteps and at the
            noisiest inversion timestep.
        """
        self.check_frame_size(frames.shape[-2], frames.shape[-1])
        state = state or StepState()
        grid = inversion_grid(self.scheduler, num_inference_steps, num_inversion_steps)
        keep = set(sampling_timesteps(self.scheduler, num_inference_steps)) | {grid[-1]}
        z0 = self.encode_frames(frames, sample=vae_sample, generator=generator)
        source_latents = self.encode_frames(frames) if vae_sample else z0
        embeddings = GuidanceEmbeddings(
            uncond=self.encode_prompt([negative_prompt]), cond=self.encode_prompt([prompt])
        )
        control = self.prepare_control(control)
        num_frames = z0.shape[0]
        batch = frame_batch_size or num_frames
        num_calls = (len(grid) - 1 if noise_timestep == "current" else len(grid)) + int(final_feature_pass)
        progress = self.progress_bar(total=num_calls)
        calls = 0

        def predict(x: torch.Tensor, t: int) -> torch.Tensor:
            nonlocal calls
            out = []
            for start in range(0, num_frames, batch):
                sl = slice(start, min(start + batch, num_frames))
                state.update(
                    phase="invert",
                    step_index=calls,
                    timestep=int(t),
                    num_steps=num_calls,
                    frame_ids=tuple(range(sl.start, sl.stop)),
                )
                out.append(
                    self.guided_noise(
                        x[sl],
                        t,
                        embeddings,
                        guidance_scale,
                        None if control is None else control[sl],
                        controlnet_conditioning_scale,
                        state,
                        branches,
                    )
                )
            calls += 1
            progress.update()
            return torch.cat(out)

        latents = ddim_invert(
            predict,
            z0,
            grid,
            self.scheduler.alphas_cumprod,
            float(self.scheduler.final_alpha_cumprod),
            noise_timestep=noise_timestep,
            keep=sorted(keep & set(grid)),
            store_device="cpu",
        )
        if final_feature_pass:
            top = max(latents)
            predict(latents[top].to(self._execution_device, z0.dtype), top)
        progress.close()
        self.scheduler.set_timesteps(num_inference_steps)
        return InversionOutput(latents=latents, source_latents=source_latents.cpu())

    # ---------------------------------------------------------------- sampling
    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: Sequence[int],
        embeddings: GuidanceEmbeddings,
        guidance_scale: float,
        control: torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
        state: StepState | None = None,
        blend: LatentBlend | None = None,
        generator: torch.Generator | None = None,
        callback_on_step_end: StepCallback | None = None,
    ) -> torch.Tensor:
        """The DDIM (eta = 0) sampling loop with CFG, ControlNet and optional latent blending.

        Args:
            latents: ``(F, 4, h, w)`` starting latents at ``timesteps[0]``.
            timesteps: descending timesteps to run (the scheduler must be set to their schedule).
            state: updated before every UNet call (``step_index`` counts from 0 over ``timesteps``).
            callback_on_step_end: ``fn(pipe, i, t, {"latents": ...}) -> dict | None``; a returned
                ``"latents"`` replaces the current ones.

        Returns:
            ``(F, 4, h, w)`` latents after the last step.
        """
        state = state or StepState()
        timesteps = [int(t) for t in timesteps]
        for i, t in enumerate(self.progress_bar(timesteps)):
            state.update(phase="sample", step_index=i, timestep=t, num_steps=len(timesteps))
            eps = self.guided_noise(
                latents, t, embeddings, guidance_scale, control, controlnet_conditioning_scale, state
            )
            latents = self.scheduler.step(eps, t, latents, return_dict=False)[0]
            if blend is not None:
                t_next = timesteps[i + 1] if i + 1 < len(timesteps) else None
                latents = blend(self.scheduler, latents, t, t_next, generator)
            latents = check_finite(latents, "latents", state=state)
            if callback_on_step_end is not None:
                update = callback_on_step_end(self, i, t, {"latents": latents})
                if update and "latents" in update:
                    latents = update["latents"]
        return latents

    @torch.no_grad()
    def reconstruct(
        self,
        inversion: InversionOutput,
        prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        control: np.ndarray | torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
    ) -> torch.Tensor:
        """Frames ``(F, 3, H, W)`` in [-1, 1] sampled back from ``inversion``'s noisiest editing latent with the
        inversion's own prompt and guidance (how faithful the inversion is, before any edit)."""
        timesteps = sampling_timesteps(self.scheduler, num_inference_steps)
        embeddings = GuidanceEmbeddings(uncond=self.encode_prompt([""]), cond=self.encode_prompt([prompt]))
        latents = inversion.at(timesteps[0]).to(self._execution_device, self.unet.dtype)
        latents = self.denoise(
            latents,
            timesteps,
            embeddings,
            guidance_scale,
            self.prepare_control(control),
            controlnet_conditioning_scale,
        )
        return self.decode_latents(latents).cpu()

    @torch.no_grad()
    def sample(
        self,
        prompt: str,
        num_frames: int,
        height: int,
        width: int,
        negative_prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        control: np.ndarray | torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
        generator: torch.Generator | None = None,
        output_type: str = "pt",
    ) -> VideoEditOutput:
        """Plain text-to-image sampling of every frame from noise (DDIM, CFG, ControlNet when given): the
        backbone's own cost, against which editing methods are normalised.

        Returns:
            :class:`VideoEditOutput` with ``(F, 3, H, W)`` frames in [-1, 1] for ``"pt"``.
        """
        self.check_frame_size(height, width)
        shape = (
            num_frames,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        noise = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
        latents = noise.to(self._execution_device, self.unet.dtype) * self.scheduler.init_noise_sigma
        embeddings = GuidanceEmbeddings(
            uncond=self.encode_prompt([negative_prompt]), cond=self.encode_prompt([prompt])
        )
        timesteps = sampling_timesteps(self.scheduler, num_inference_steps)
        latents = self.denoise(
            latents,
            timesteps,
            embeddings,
            guidance_scale,
            self.prepare_control(control),
            controlnet_conditioning_scale,
            generator=generator,
        )
        return self.finish(latents, output_type)

    def make_blend(
        self,
        masks: torch.Tensor | None,
        inversion: InversionOutput,
        source: str = "noised",
    ) -> LatentBlend | None:
        """A :class:`LatentBlend` from region masks ``(F, R, H, W)`` (their union, nearest-downsampled
        to latent size as the official code), or ``None`` when there are no masks or they cover everything."""
        if masks is None:
            return None
        union = masks.any(dim=1, keepdim=True).float()  # (F, 1, H, W)
        h, w = inversion.source_latents.shape[-2:]
        mask = torch.nn.functional.interpolate(union, size=(h, w), mode="nearest")
        if bool((mask > 0).all()):
            return None
        return LatentBlend(
            mask=mask, source_latents=inversion.source_latents, source=source, inversion=inversion
        )

    def finish(self, latents: torch.Tensor, output_type: str = "pt") -> VideoEditOutput:
        """Decode and package: ``output_type`` ``"pt"`` (floats in [-1, 1]), ``"np"`` (uint8) or ``"latent"``."""
        if output_type == "latent":
            return VideoEditOutput(frames=None, latents=latents)
        frames = self.decode_latents(latents).cpu()
        if output_type == "np":
            return VideoEditOutput(frames=tensor_to_frames(frames), latents=latents)
        return VideoEditOutput(frames=frames, latents=latents)
