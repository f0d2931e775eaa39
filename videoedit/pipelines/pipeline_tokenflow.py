"""TokenFlow: consistent video editing by propagating keyframe self-attention along diffusion-feature
correspondences (Geyer et al., ICLR 2024; github.com/omerbt/TokenFlow), with Plug-and-Play injection
(pnp-diffusers) or SDEdit as the per-keyframe editor.

Every denoising step runs, on ``[source | uncond | cond]`` batches (the source branch is the inverted
clip at the current timestep, conditioned on the inversion prompt):

1. a keyframe pass over one keyframe per batch of ``batch_size`` frames (extended self-attention among
   the keyframes, PnP injection; its noise prediction is discarded, as in the official code);
2. one propagation pass per batch (self-attention outputs gathered from the keyframes by nearest
   neighbour; PnP conv injection), followed by the DDIM step of that batch.

Shapes: latents ``(F, 4, h, w)``; frames ``(F, 3, H, W)`` in [-1, 1]; the UNet batch ``(3 * n, 4, h, w)``.
The processors and store live in :mod:`videoedit.attention.tokenflow`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from videoedit.attention.install import attention_layer_names, attention_processors, module_hooks
from videoedit.attention.state import StepState
from videoedit.attention.tokenflow import (
    BLEND_MODES,
    BRANCHES,
    KEYFRAME_SAMPLING,
    PNP_ATTENTION_LAYERS,
    PNP_CONV_LAYER,
    KeyframeStore,
    PnPConvInjection,
    PropagationPlan,
    TokenFlowAttnProcessor,
    batch_keyframes,
    frame_batches,
    injection_timesteps,
    propagation_plan,
    sdedit_timesteps,
)
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import InversionOutput, sampling_timesteps
from videoedit.numerics import check_finite
from videoedit.pipelines.pipeline_video_edit import StepCallback, VideoEditOutput, VideoEditPipeline

logger = logging.getLogger(__name__)

#: official ``configs/config_pnp.yaml`` / ``config_sdedit.yaml``
OFFICIAL_NEGATIVE_PROMPT = "ugly, blurry, low res, unrealistic, unaesthetic"

VARIANTS = ("pnp", "sdedit")
INIT_LATENTS = ("official", "inverted")
SDEDIT_NOISE = ("ddim", "random")


@dataclass
class TokenFlowSettings:
    """TokenFlow's options: the keys of ``configs/method/tokenflow.yaml`` (defaults: the official
    ``config_pnp.yaml``), given once here, taken by :class:`TokenFlowPipeline` and inherited by
    :class:`~videoedit.methods.tokenflow.TokenFlowMethod`.

    Attributes:
        variant: ``"pnp"`` (PnP injection, ``run_tokenflow_pnp.py``) or ``"sdedit"`` (no injection; starts at
            ``sdedit_start``, ``run_tokenflow_sdedit.py``).
        batch_size: frames per batch, one keyframe each (official 8).
        pnp_attn_t, pnp_f_t: fractions of the steps with q/k and conv injection (official 0.5, 0.8).
        keyframe_sampling: ``"random"`` (official, re-drawn every step from the generator) or ``"even"``.
        blend: ``"official"`` (own + previous batch's keyframe, sigmoid weight) or ``"paper"``
            (see :mod:`videoedit.attention.tokenflow`).
        init_latent: ``"official"`` (re-noised estimate) or ``"inverted"`` (the inverted latent, pnp-diffusers).
        sdedit_start, sdedit_start_rounding, sdedit_noise: SDEdit's start level (official 0.9), its slicing
            (``"official"``: 44 steps from 861 for 0.9; ``"exact"``: 45 from 881) and its noise (``"ddim"``: the
            inverted noise; ``"random"``: one random map shared by all frames).
        nn_chunk_size: query tokens per nearest-neighbour block (``None``: all at once, official).
        keyframe_window: keyframes each keyframe attends to on either side (``None``: all, official).
        offload_keyframe_cache: keep the keyframe caches on the CPU (CUDA only; no-op on the CPU).
    """

    variant: str = "pnp"
    batch_size: int = 8
    pnp_attn_t: float = 0.5
    pnp_f_t: float = 0.8
    keyframe_sampling: str = "random"
    blend: str = "official"
    init_latent: str = "official"
    sdedit_start: float = 0.9
    sdedit_start_rounding: str = "official"
    sdedit_noise: str = "ddim"
    nn_chunk_size: int | None = 4096
    keyframe_window: int | None = None
    offload_keyframe_cache: bool = False

    def __post_init__(self) -> None:
        """Raise :class:`ConfigError` (naming the ``method.<key>``) on any invalid option."""
        choices = {
            "variant": VARIANTS,
            "keyframe_sampling": KEYFRAME_SAMPLING,
            "blend": BLEND_MODES,
            "init_latent": INIT_LATENTS,
            "sdedit_start_rounding": ("official", "exact"),
            "sdedit_noise": SDEDIT_NOISE,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"method.{key} must be one of {list(allowed)}, got {getattr(self, key)!r}.")
        if int(self.batch_size) < 1:
            raise ConfigError(f"method.batch_size must be >= 1 (frames per keyframe), got {self.batch_size}.")
        for key in ("pnp_attn_t", "pnp_f_t"):
            if not 0.0 <= float(getattr(self, key)) <= 1.0:
                raise ConfigError(
                    f"method.{key} is a fraction of the steps and must be in [0, 1], got {getattr(self, key)}."
                )
        if not 0.0 < float(self.sdedit_start) <= 1.0:
            raise ConfigError(
                f"method.sdedit_start must be in (0, 1] (noise level to start from), got {self.sdedit_start}."
            )
        if self.nn_chunk_size is not None and int(self.nn_chunk_size) < 1:
            raise ConfigError(
                f"method.nn_chunk_size must be >= 1 or null (no chunking), got {self.nn_chunk_size}."
            )
        if self.keyframe_window is not None and int(self.keyframe_window) < 0:
            raise ConfigError(
                f"method.keyframe_window must be >= 0 or null (all keyframes), got {self.keyframe_window}."
            )

    def options(self) -> dict:
        """The settings as a plain dict (for ``metrics.json``)."""
        return {f: getattr(self, f) for f in TokenFlowSettings.__dataclass_fields__}


def tokenflow_timesteps(
    scheduler,
    num_inference_steps: int,
    variant: str = "pnp",
    sdedit_start: float = 0.9,
    sdedit_start_rounding: str = "official",
) -> list[int]:
    """The timesteps a TokenFlow edit goes through (descending); leaves the scheduler on the full schedule.

    ``"pnp"``: the whole schedule (981 ... 1 for 50 steps). ``"sdedit"``: its tail from ``sdedit_start``
    (:func:`~videoedit.attention.tokenflow.sdedit_timesteps`).
    """
    timesteps = sampling_timesteps(scheduler, num_inference_steps)
    if variant == "sdedit":
        timesteps = sdedit_timesteps(timesteps, sdedit_start, sdedit_start_rounding)
        if not timesteps:
            raise ConfigError(
                f"method.sdedit_start={sdedit_start} with {num_inference_steps} steps leaves no step to run: "
                "raise sdedit_start or the number of steps."
            )
    return timesteps


@dataclass
class TokenFlowOutput(VideoEditOutput):
    """:class:`VideoEditOutput` plus what the run did.

    Attributes:
        timesteps: the timesteps run.
        keyframes: the keyframes (frame indices) of every step.
        cache_bytes: the largest size the keyframe caches reached.
    """

    timesteps: list[int] = field(default_factory=list)
    keyframes: list[list[int]] = field(default_factory=list)
    cache_bytes: int = 0


class TokenFlowPipeline(VideoEditPipeline):
    """TokenFlow editing (PnP or SDEdit) with optional ControlNet; see the module docstring."""

    #: the self-attention processor (benchmarks swap in a reference implementation)
    processor_class: ClassVar[type[TokenFlowAttnProcessor]] = TokenFlowAttnProcessor

    def initial_latents(
        self,
        inversion: InversionOutput,
        timestep: int,
        init_latent: str = "official",
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Starting latents ``(F, 4, h, w)`` at ``timestep`` (on the CPU, float32).

        ``"official"`` (TokenFlow): the noise implied by the noisiest inverted latent,
        ``eps = (z_T - sqrt(a_T) z0) / sqrt(1 - a_T)``, added to the clean latents at ``timestep``; this
        is a re-noised estimate, not the inverted latent. ``"inverted"`` (pnp-diffusers): the inverted
        latent at ``timestep`` itself. ``noise`` (``(F|1, 4, h, w)``, SDEdit with random noise) replaces
        ``eps``.
        """
        z0 = inversion.source_latents.float()
        if noise is None and init_latent == "inverted":
            return inversion.at(timestep).float().clone()
        if noise is None:
            t_max = max(inversion.latents)
            a = self.scheduler.alphas_cumprod[t_max].double()
            noise = (inversion.at(t_max).double() - a.sqrt() * z0.double()) / (1 - a).sqrt()
        noise = noise.float().expand_as(z0)
        return self.scheduler.add_noise(z0, noise, torch.tensor([int(timestep)]))

    def _pass(
        self,
        store: KeyframeStore,
        mode: str,
        frame_ids: list[int],
        latents: torch.Tensor,
        source: torch.Tensor,
        t: int,
        text: torch.Tensor,
        guidance_scale: float,
        control: torch.Tensor | None,
        controlnet_conditioning_scale: float,
        plan: PropagationPlan | None = None,
    ) -> torch.Tensor:
        """One UNet call on ``[source | uncond | cond]`` for ``frame_ids``; the guided noise ``(n, 4, h, w)``.

        ``latents``/``source``: ``(n, 4, h, w)``; ``text``: ``(3, 77, D)`` (one row per branch).
        """
        n = len(frame_ids)
        store.state.update(
            num_frames=n, branches=BRANCHES, latent_size=tuple(latents.shape[-2:]), frame_ids=tuple(frame_ids)
        )
        latent_in = torch.cat([source, latents, latents])
        text_in = text.repeat_interleave(n, dim=0)
        control_in = None if control is None else control[frame_ids].repeat(3, 1, 1, 1)
        with store.pass_(mode, plan):
            eps = self.predict_noise(
                latent_in, t, text_in, control_in, controlnet_conditioning_scale=controlnet_conditioning_scale
            )
        _, eps_uncond, eps_cond = eps.chunk(3)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    def _check_layers(self, variant: str) -> None:
        """PnP needs the SD UNet's injection layers (SDEdit injects nothing and needs none)."""
        if variant != "pnp":
            return
        names = set(attention_layer_names(self.unet, "attn1"))
        missing = [n for n in PNP_ATTENTION_LAYERS if n not in names]
        if PNP_CONV_LAYER not in dict(self.unet.named_modules()):
            missing.append(PNP_CONV_LAYER)
        if missing:
            raise ConfigError(
                f"TokenFlow's PnP injection needs an SD-1.x/2.x UNet; this one has no {missing[0]!r}. "
                "Use method.variant=sdedit or an SD-shaped UNet."
            )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        inversion: InversionOutput,
        source_prompt: str = "",
        negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT,
        control: np.ndarray | torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        controlnet_conditioning_scale: float = 1.0,
        settings: TokenFlowSettings | None = None,
        generator: torch.Generator | None = None,
        state: StepState | None = None,
        callback_on_step_end: StepCallback | None = None,
        output_type: str = "pt",
    ) -> TokenFlowOutput:
        """Edit the inverted clip towards ``prompt``.

        Args:
            prompt: target prompt.
            inversion: the source's inversion; it must hold latents at every timestep run (the source
                branch is the inverted clip) and its noisiest latent.
            source_prompt: the source branch's prompt (TokenFlow: the inversion prompt; pnp-diffusers: "").
            negative_prompt: CFG's unconditional prompt (official TokenFlow: :data:`OFFICIAL_NEGATIVE_PROMPT`).
            control: ControlNet maps ``(F, H, W, 3)`` uint8, applied to all three branches.
            settings: :class:`TokenFlowSettings` (``None``: the official defaults).
            generator: draws the keyframes (and SDEdit's random noise), on its own device (CPU or CUDA).
            state: the step state shared with the processors.
            callback_on_step_end: ``fn(pipe, i, t, {"latents": ...})``; a returned ``"latents"`` replaces them.
            output_type: ``"pt"``, ``"np"`` or ``"latent"``.

        Returns:
            :class:`TokenFlowOutput` (frames ``(F, 3, H, W)`` in [-1, 1] for ``"pt"``).
        """
        # 1. check inputs (before any work; the settings checked themselves when built)
        s = settings or TokenFlowSettings()
        self._check_layers(s.variant)
        timesteps = tokenflow_timesteps(
            self.scheduler, num_inference_steps, s.variant, s.sdedit_start, s.sdedit_start_rounding
        )
        missing = [t for t in timesteps if t not in inversion.latents]
        if missing:
            raise ConfigError(
                f"The inversion has no latents at t={missing[:3]} of the {num_inference_steps}-step editing "
                "schedule (TokenFlow's source branch needs every one): invert with num_inference_steps="
                f"{num_inference_steps} and an inversion schedule that contains it."
            )
        num_frames = inversion.source_latents.shape[0]
        control = self.prepare_control(control)
        if control is not None and control.shape[0] != num_frames:
            raise ConfigError(f"{control.shape[0]} control maps for {num_frames} frames: give one per frame.")
        state = state or StepState()
        device, dtype = self._execution_device, self.unet.dtype

        # 2. encode the prompts: one row per branch [source | uncond | cond]
        text = self.encode_prompt([source_prompt, negative_prompt, prompt])

        # 3. prepare the starting latents
        noise = None
        if s.variant == "sdedit" and s.sdedit_noise == "random":
            # drawn on the generator's device (a CUDA generator cannot draw on the CPU), kept on the CPU
            shape = (1, *inversion.source_latents.shape[1:])
            noise = torch.randn(
                shape, generator=generator, device=None if generator is None else generator.device
            ).cpu()
        latents = self.initial_latents(inversion, timesteps[0], s.init_latent, noise).to(device, dtype)

        # 4. the call's store, processors and hook
        full = sampling_timesteps(self.scheduler, num_inference_steps)
        pnp = s.variant == "pnp"
        store = KeyframeStore(
            state,
            qk_timesteps=injection_timesteps(full, s.pnp_attn_t) if pnp else (),
            conv_timesteps=injection_timesteps(full, s.pnp_f_t) if pnp else (),
            nn_chunk_size=s.nn_chunk_size,
            keyframe_window=s.keyframe_window,
            cache_device="cpu" if s.offload_keyframe_cache and torch.device(device).type == "cuda" else None,
        )
        qk_layers = set(PNP_ATTENTION_LAYERS) if pnp else set()
        processors = {
            name: self.processor_class(name, store, inject_qk=name in qk_layers)
            for name in attention_layer_names(self.unet, "attn1")
        }
        hooks = {PNP_CONV_LAYER: PnPConvInjection(store)} if pnp else {}
        batches = frame_batches(num_frames, s.batch_size)
        history: list[list[int]] = []
        cache_bytes = 0

        # 5. denoise: a keyframe pass, then one propagation pass per batch, every step
        with attention_processors(self.unet, processors), module_hooks(self.unet, forward_hooks=hooks):
            try:
                for i, t in enumerate(self.progress_bar(timesteps)):
                    state.update(phase="sample", step_index=i, timestep=t, num_steps=len(timesteps))
                    source_t = inversion.at(t)
                    keyframes = batch_keyframes(num_frames, s.batch_size, s.keyframe_sampling, generator)
                    history.append(keyframes)
                    args = (t, text, guidance_scale, control, controlnet_conditioning_scale)
                    self._pass(
                        store, "keyframes", keyframes, latents[keyframes],
                        source_t[keyframes].to(device, dtype), *args,
                    )  # fmt: skip
                    cache_bytes = max(cache_bytes, store.nbytes())
                    new_latents = torch.empty_like(latents)
                    for b, frames in enumerate(batches):
                        plan = propagation_plan(b, batches, keyframes, s.blend)
                        ids = list(frames)
                        eps = self._pass(
                            store,
                            "propagate",
                            ids,
                            latents[ids],
                            source_t[ids].to(device, dtype),
                            *args,
                            plan,
                        )
                        new_latents[ids] = self.scheduler.step(eps, t, latents[ids], return_dict=False)[0]
                    latents = check_finite(
                        new_latents, "latents", phase="sample", step=i, num_steps=len(timesteps), timestep=t
                    )
                    store.clear()
                    if callback_on_step_end is not None:
                        update = callback_on_step_end(self, i, t, {"latents": latents})
                        if update and "latents" in update:
                            latents = update["latents"]
            finally:
                store.clear()

        # 6. decode
        out = self.finish(latents, output_type)
        return TokenFlowOutput(
            frames=out.frames,
            latents=out.latents,
            timesteps=timesteps,
            keyframes=history,
            cache_bytes=cache_bytes,
        )
