"""FlowEdit (Kulikov et al., ICCV 2025): inversion-free editing on a flow-matching model, here Wan 2.1's DiT.

FlowEdit builds an ODE that transports the source latents ``x_src`` directly to the edit, driven by the
*difference* of the target and source velocities at a shared noisy point, so no inversion is needed. With
timesteps ``t_0 > ... > t_{T-1}`` (``sigma_i = t_i / 1000``, ``sigma_T = 0``)::

    z = x_src
    for i with T - i <= n_max:                       # the first T - n_max steps are skipped
        if T - i > n_min:                            # FlowEdit steps
            dv = 0
            repeat n_avg times:                      # fresh noise each time, from the run's generator
                n ~ N(0, I)
                z_src = (1 - sigma_i) x_src + sigma_i n
                z_tar = z + z_src - x_src
                dv += (v_tar(z_tar, t_i) - v_src(z_src, t_i)) / n_avg     # each with its own CFG
            z = z + (sigma_{i+1} - sigma_i) dv
        else:                                        # the plain-sampling tail (n_min > 0)
            at the first tail step: n ~ N(0, I); x = z + (1 - sigma_i) x_src + sigma_i n - x_src
            x = x + (sigma_{i+1} - sigma_i) v_tar(x, t_i)
    return z if n_min == 0 else x

``v_src`` is guided with the source prompt at ``source_guidance_scale``, ``v_tar`` with the target prompt at
``guidance_scale``; both use the same negative prompt. A target prompt equal to the source prompt with equal
guidance returns ``x_src`` exactly (the two velocities coincide). Nothing is stored per step beyond ``z``.

Control (Wan VACE): both velocities, and the sampling tail, see the same control latents, built from the source
clip's condition maps (pose, depth...), so the velocity difference keeps the structure the maps fix.

Region-aware editing (``layout``): the target velocity goes through :mod:`videoedit.attention.wan_layout`'s
processors, the target prompt's local-prompt spans carry each local prompt's own embedding (as VideoGrain does
with CLIP), and latents outside the union of the regions are blended back to the source after every step.

Adapted from the official FlowEdit (fallenshock/FlowEdit, MIT) and its Wan 2.1 ports; code is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean

from videoedit.attention.install import attention_processors
from videoedit.attention.state import StepState
from videoedit.attention.wan_layout import DiTLayoutSettings, WanLayoutController, wan_layout_processors
from videoedit.errors import ConfigError
from videoedit.layout.prompts import PromptLayout, content_offset, locate_local_prompts, swap_span_embeddings
from videoedit.layout.regions import LayerLayout, layout_from_token_masks
from videoedit.layout.video_tokens import latent_frame_coverage, pool_coverage
from videoedit.numerics import check_finite
from videoedit.pipelines.pipeline_wan import StepCallback, VaceControl, WanVideoEditPipeline, WanVideoOutput

VELOCITY_ORDERS = ("sequential", "batched")


@dataclass
class FlowEditSettings:
    """FlowEdit's hyper-parameters (the keys of ``configs/method/flowedit.yaml``, where each default's source
    is given).

    Attributes:
        num_inference_steps: ``T``, steps of the schedule.
        n_max: FlowEdit runs the last ``n_max`` steps (the first ``T - n_max`` are skipped): the edit strength.
        n_min: the last ``n_min`` steps are plain sampling of the target (0: none).
        n_avg: velocity differences averaged per step, each with fresh noise.
        source_guidance_scale: CFG of the source velocity.
        guidance_scale: CFG of the target velocity.
        shift: the flow shift of the schedule (``None``: the backbone's scheduler, 3.0 for Wan 2.1 at 480p).
        velocity_order: ``sequential`` (one transformer call per prompt and CFG branch: peak memory of plain
            sampling) or ``batched`` (the four calls as one batch, as the official code: faster on a GPU with
            memory to spare). The results agree to floating-point error.
    """

    num_inference_steps: int = 50
    guidance_scale: float = 13.5
    source_guidance_scale: float = 5.0
    n_max: int = 35
    n_min: int = 0
    n_avg: int = 1
    shift: float | None = None
    velocity_order: str = "sequential"

    def __post_init__(self) -> None:
        t = self.num_inference_steps
        if t < 1:
            raise ConfigError(f"method.num_inference_steps must be >= 1, got {t}.")
        if not 0 <= self.n_min <= self.n_max <= t:
            raise ConfigError(
                f"FlowEdit needs 0 <= n_min <= n_max <= num_inference_steps, got n_min={self.n_min}, "
                f"n_max={self.n_max}, num_inference_steps={t}: lower method.n_max or raise the steps."
            )
        if self.n_avg < 1:
            raise ConfigError(f"method.n_avg must be >= 1, got {self.n_avg}.")
        if self.shift is not None and self.shift <= 0:
            raise ConfigError(f"method.shift must be > 0 or null, got {self.shift}.")
        if self.velocity_order not in VELOCITY_ORDERS:
            raise ConfigError(
                f"method.velocity_order must be one of {VELOCITY_ORDERS}, got {self.velocity_order!r}."
            )

    def executed_steps(self) -> range:
        """Indices of the steps that run: ``T - n_max .. T - 1``."""
        return range(self.num_inference_steps - self.n_max, self.num_inference_steps)


@dataclass
class FlowEditOutput(WanVideoOutput):
    """Adds the prompt layout (``None`` without regions) and the steps run."""

    prompt_layout: PromptLayout | None = None
    steps_run: int = 0


@dataclass
class RegionConditioning:
    """What region-aware editing needs, prepared once per edit.

    Attributes:
        embeddings: the target prompt's embeddings ``(1, L, D)`` with each local prompt's own embedding in its span.
        prompt_layout: the local prompts' token spans.
        layout: the regions on the token grid.
        blend_mask: ``(1, 1, F', h, w)`` float, 1 inside the union of the regions (latent resolution).
        prompt_length: tokens of the target prompt itself.
    """

    embeddings: torch.Tensor
    prompt_layout: PromptLayout
    layout: LayerLayout
    blend_mask: torch.Tensor
    prompt_length: int


class FlowEditPipeline(WanVideoEditPipeline):
    """See the module docstring; ``__call__`` edits one target prompt."""

    def region_conditioning(
        self,
        prompt: str,
        local_prompts: Sequence[str],
        masks: torch.Tensor,
        latent_shape: Sequence[int],
        settings: DiTLayoutSettings,
        skip_missing_local_prompts: bool = False,
    ) -> RegionConditioning:
        """Token spans of the local prompts in ``prompt`` (UMT5 tokens), the swapped embeddings, and the
        regions ``masks (F, R, H, W)`` mapped to the token grid and the latent grid."""
        if masks.shape[1] < len(local_prompts):
            raise ConfigError(
                f"{len(local_prompts)} local prompts but only {masks.shape[1]} region masks: give one local prompt "
                "per region (data.regions), '' for a region without one."
            )
        length = self.max_sequence_length
        prompt, local_prompts = prompt_clean(prompt), [prompt_clean(p) for p in local_prompts]
        prompt_layout = locate_local_prompts(
            self.tokenizer, prompt, local_prompts, skip_missing_local_prompts, max_length=length
        )
        full = self.encode_prompt([prompt])
        present = [p if span is not None else "" for p, span in zip(local_prompts, prompt_layout.spans)]
        embeddings = (
            swap_span_embeddings(
                full, self.encode_prompt(present), prompt_layout.spans, content_offset(self.tokenizer)
            )
            if any(present)
            else full
        )
        _, _, frames, h, w = latent_shape
        coverage = latent_frame_coverage(masks.cpu(), self.vae_scale_factor_temporal, settings.temporal)
        if coverage.shape[0] != frames:
            raise ConfigError(f"masks cover {coverage.shape[0]} latent frames, the latents {frames}")
        _, ph, pw = self.patch_size
        tokens = pool_coverage(coverage, (h // ph, w // pw), settings.threshold)
        layout = layout_from_token_masks(tokens, prompt_layout.token_region).to(self._execution_device)
        union = pool_coverage(coverage, (h, w), settings.threshold).any(1, keepdim=True)  # (F', 1, h, w)
        blend_mask = union.permute(1, 0, 2, 3)[None].float()
        prompt_length = len(self.tokenizer(prompt, truncation=True, max_length=length).input_ids)
        return RegionConditioning(embeddings, prompt_layout, layout, blend_mask, prompt_length)

    def _velocity_pair(
        self,
        z_src: torch.Tensor,
        z_tar: torch.Tensor,
        t: float,
        src: tuple[torch.Tensor, torch.Tensor],
        tar: tuple[torch.Tensor, torch.Tensor],
        settings: FlowEditSettings,
        state: StepState,
        control: VaceControl | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided source and target velocities at ``t`` (``src``/``tar`` = (cond, uncond) embeddings), all four
        transformer calls with the same VACE ``control``."""
        if settings.velocity_order == "batched":
            state.update(
                num_frames=1, branches=("source_uncond", "source_cond", "target_uncond", "target_cond")
            )
            x = torch.cat([z_src, z_src, z_tar, z_tar])
            emb = torch.cat([src[1], src[0], tar[1], tar[0]])
            v = self.velocity(x, t, emb, control)
            v_src = v[0:1] + settings.source_guidance_scale * (v[1:2] - v[0:1])
            v_tar = v[2:3] + settings.guidance_scale * (v[3:4] - v[2:3])
            return check_finite(v_src, "source velocity", state=state), check_finite(
                v_tar, "target velocity", state=state
            )
        v_src = self.guided_velocity(
            z_src, t, *src, settings.source_guidance_scale, state, branch="source_", control=control
        )
        v_tar = self.guided_velocity(
            z_tar, t, *tar, settings.guidance_scale, state, branch="target_", control=control
        )
        return v_src, v_tar

    @torch.no_grad()
    def __call__(
        self,
        source_latents: torch.Tensor,
        source_prompt: str,
        prompt: str,
        negative_prompt: str = "",
        settings: FlowEditSettings | None = None,
        local_prompts: Sequence[str] = (),
        masks: torch.Tensor | None = None,
        layout: DiTLayoutSettings | None = None,
        skip_missing_local_prompts: bool = False,
        generator: torch.Generator | None = None,
        state: StepState | None = None,
        callback_on_step_end: StepCallback | None = None,
        output_type: str = "pt",
        control: np.ndarray | torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
    ) -> FlowEditOutput:
        """Edit the source latents towards ``prompt``.

        Args:
            source_latents: ``(1, 16, F', h, w)`` normalised latents of the source (:meth:`encode_video`).
            source_prompt: describes the source (the source velocity's prompt).
            prompt: the target prompt.
            negative_prompt: CFG's unconditional prompt, for both velocities.
            settings: :class:`FlowEditSettings`.
            local_prompts, masks, layout: region-aware editing: one local prompt per region of ``masks
                (F, R, H, W)`` (each a token span of ``prompt`` or ``""``), with :class:`DiTLayoutSettings`
                (``None``: plain FlowEdit).
            generator: the noise of every FlowEdit step (and of the sampling tail).
            state: shared with installed processors (``step_index`` counts the executed steps from 0).
            control: Wan VACE only: the source clip's condition maps ``(F, H, W, 3)`` uint8 (or ``(F, 3, H, W)`` in
                [-1, 1]), seen by the source and the target velocity alike; ``None`` on VACE: the empty context
                (:meth:`~videoedit.pipelines.pipeline_wan.WanVideoEditPipeline.prepare_control`).
            controlnet_conditioning_scale: the control hint's weight in every VACE layer.

        Returns:
            :class:`FlowEditOutput`: frames ``(F, 3, H, W)`` in [-1, 1] for ``output_type="pt"``.
        """
        # 1. check inputs
        settings = settings or FlowEditSettings()
        if layout is not None and masks is None:
            raise ConfigError(
                "Region-aware FlowEdit (method.layout) needs region masks: set data.masks_dir and data.regions."
            )
        state = state or StepState()
        device = self._execution_device
        x_src = source_latents.to(device, torch.float32)
        # 2. prompts (and regions)
        negative = self.encode_prompt([negative_prompt])
        src = (self.encode_prompt([source_prompt]), negative)
        regions = None
        if layout is not None:
            regions = self.region_conditioning(
                prompt, local_prompts, masks, x_src.shape, layout, skip_missing_local_prompts
            )
            tar = (regions.embeddings, negative)
        else:
            tar = (self.encode_prompt([prompt]), negative)
        vace = self.prepare_control(control, controlnet_conditioning_scale, *self.clip_shape(x_src))
        # 3. schedule
        timesteps, sigmas = self.schedule(settings.num_inference_steps, settings.shift)
        steps = list(settings.executed_steps())
        blend = None if regions is None or not layout.blend else regions.blend_mask.to(device)
        processors = (
            wan_layout_processors(
                self.transformer,
                WanLayoutController(state, regions.layout, layout, regions.prompt_length, len(steps)),
            )
            if regions is not None
            else {}
        )
        noise_device = generator.device if generator is not None else "cpu"

        def noise() -> torch.Tensor:
            return torch.randn(x_src.shape, generator=generator, device=noise_device).to(device)

        # 4. the FlowEdit ODE, then the plain-sampling tail
        z, x_tail, tail_noise = x_src.clone(), None, None
        with attention_processors(self.transformer, processors):
            for k, i in enumerate(self.progress_bar(steps)):
                t, s, s_next = timesteps[i], sigmas[i], sigmas[i + 1]
                state.update(phase="sample", step_index=k, timestep=t, num_steps=len(steps))
                if settings.num_inference_steps - i > settings.n_min:
                    dv = torch.zeros_like(x_src)
                    for _ in range(settings.n_avg):
                        z_src = (1 - s) * x_src + s * noise()
                        z_tar = z_src + (z - x_src)  # = z + z_src - x_src; exact when z == x_src
                        v_src, v_tar = self._velocity_pair(z_src, z_tar, t, src, tar, settings, state, vace)
                        dv += (v_tar - v_src) / settings.n_avg
                    z = check_finite(z + (s_next - s) * dv, "latents", state=state)
                    if blend is not None:
                        z = blend * z + (1 - blend) * x_src
                else:
                    if x_tail is None:
                        tail_noise = noise()
                        x_tail = z + (1 - s) * x_src + s * tail_noise - x_src
                    state.update(num_frames=1)
                    v = self.guided_velocity(
                        x_tail, t, *tar, settings.guidance_scale, state, branch="target_", control=vace
                    )
                    x_tail = check_finite(x_tail + (s_next - s) * v, "latents", state=state)
                    if blend is not None:
                        x_tail = blend * x_tail + (1 - blend) * ((1 - s_next) * x_src + s_next * tail_noise)
                if callback_on_step_end is not None:
                    update = callback_on_step_end(self, k, t, {"latents": z if x_tail is None else x_tail})
                    if update and "latents" in update:
                        if x_tail is None:
                            z = update["latents"]
                        else:
                            x_tail = update["latents"]
        latents = z if settings.n_min == 0 else x_tail
        out = self.finish(latents, output_type)
        return FlowEditOutput(
            frames=out.frames,
            latents=out.latents,
            prompt_layout=None if regions is None else regions.prompt_layout,
            steps_run=len(steps),
        )
