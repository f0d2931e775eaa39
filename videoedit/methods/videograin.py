"""``method=videograin``: VideoGrain's space-time layout attention (Yang et al., ICLR 2025).

Defaults reproduce the official code (knightyxp/VideoGrain); every deliberate difference is a switch:

================================  ==========================  =====================================
key                               official                    alternatives
================================  ==========================  =====================================
modulation.self_branch            uncond (sliced-head quirk)  cond (DenseDiffusion), both
modulation.treg_offset            1: ((t-1)/1000)^5           0: (t/1000)^5 (DenseDiffusion)
modulation.end_step               15 steps, absolute          null (default here): ceil(fraction * steps)
modulation.mask_downsample        nearest                     max, area (thin parts survive)
frame_span                        all (quadratic in frames)   window (+ first frame; linear)
skip_missing_local_prompts        true (silent)               false (default here: an error)
pnp_alignment                     official (one-step offset)  same
pnp_branches                      official ("" + source)      cond (source features to both branches)
attention_maps                    official (pre-softmax)      probs
skip_mode (blending_percentage)   official (x_981, loop idx)  consistent
blend_source                      noised                      inverted
================================  ==========================  =====================================

``modulation.end_step`` defaults to ``null``: the first ``ceil(fraction * steps)`` steps are modulated
(``fraction`` 0.3), so the window covers the same noise levels at any number of steps; the official code
modulates an absolute 15 steps (``end_step=15``). Both give 15 at the official 50 steps; at 25 steps
``fraction`` modulates 8 (t 961..821), ``end_step=15`` 15 (t 961..401).

``skip_missing_local_prompts`` defaults to ``false``: a local prompt that is not a token subsequence of the
full prompt is an error, raised before any model is loaded. The official code looks for each local prompt's
``n`` tokens at every start ``j = 0..76`` of the 77-token full prompt and compares ``ids[j:j+n]`` with them;
near the end that slice is shorter than ``n``, so a missing prompt of 1 or 2 tokens is skipped silently
(the 1-token slice broadcasts against 2 tokens) and a missing prompt of 3 or more tokens crashes with a
tensor size mismatch. ``true`` skips every missing local prompt, whatever its length, with a warning in
``run.log`` (the official silent skip, extended to the lengths where the official code crashes): its region
still groups self-attention and latent blending, but no prompt tokens are tied to it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from videoedit.analysis.attention_maps import (
    candidate_nouns,
    cluster_study,
    cross_attention_video,
    render_labels,
    upsample_rgb,
    word_token_spans,
)
from videoedit.attention.consistent import ConsistentSelfAttention
from videoedit.attention.flatten import Trajectories, build_trajectories
from videoedit.attention.st_layout import FrameSpan
from videoedit.attention.state import StepState
from videoedit.attention.videograin import (
    AttentionRecorder,
    ModulationSettings,
    PnPFeatures,
    VideoGrainController,
    pnp_source_timestep,
    schedule_position,
)
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError, PromptError
from videoedit.inversion.cache import tensor_digest
from videoedit.inversion.ddim import InversionOutput, sampling_timesteps
from videoedit.layout.prompts import locate_local_prompts
from videoedit.methods.base import Artifacts, EditRequest, EditResult
from videoedit.methods.inverting import InversionEditMethod, InversionSettings
from videoedit.models.freeu import FreeUSettings
from videoedit.models.tokenizer import load_clip_tokenizer
from videoedit.motion import build_flow_estimator, video_flows
from videoedit.pipelines.pipeline_videograin import VideoGrainPipeline

logger = logging.getLogger(__name__)

_FLOWS_KEY = "flatten/flows"
_CLUSTER_SELF = "cluster/self"
_CLUSTER_CROSS = "cluster/cross"


def _settings(value: ModulationSettings | Mapping | None) -> ModulationSettings:
    if isinstance(value, ModulationSettings):
        return value
    fields = dict(value or {})
    if "factors" in fields:
        fields["factors"] = tuple(int(f) for f in fields["factors"])
    try:
        return ModulationSettings(**fields)
    except TypeError as err:
        raise ConfigError(f"Bad method.modulation settings {fields}: {err}") from err


def full_frame_masks(source: SourceVideo) -> torch.Tensor:
    """``(F, 1, H, W)`` all-true: one region covering every frame (a global prompt without masks)."""
    return torch.ones((source.num_frames, 1, *source.size), dtype=torch.bool)


class VideoGrainMethod(InversionEditMethod):
    """VideoGrain editing: see the module docstring and ``configs/method/videograin.yaml``.

    Args:
        num_inference_steps, guidance_scale: official 50 and 7.5.
        modulation: :class:`ModulationSettings` (or its fields).
        frame_span: ``all`` (official) or ``window`` (``window_size`` neighbouring frames + the first).
        window_size: frames in the sliding window.
        chunk_budget_mb: memory for one query chunk's attention scores (bounds peak memory).
        use_pnp, inject_step: PnP feature/q-k injection during the first ``inject_step`` steps.
        pnp_alignment: ``official`` (features recorded one grid step lower) or ``same``.
        pnp_branches: ``official`` (the inversion also runs the ``""``-prompt branch, whose features go to
            the edit's unconditional branch; twice the inversion's UNet work) or ``cond`` (the source-prompt
            features go to both branches).
        flatten_factors: FLATTEN at these latent downsample factors (official ``flatten_res``: 1 = 64x64
            for 512 px, 2 = 32x32, 4 = 16x16); empty = off.
        flow_backend: ``auto`` (RAFT if its weights are on disk, else OpenCV DIS), ``raft`` or ``dis``.
        raft_weights: path of RAFT-large weights.
        blending_percentage, skip_mode, blend_source: see :class:`VideoGrainPipeline`.
        negative_prompt_target: ``controlnet`` (official) or ``both``.
        skip_missing_local_prompts: skip (with a warning) local prompts missing from the full prompt,
            whatever their length; the official code skips those of 1-2 tokens silently and crashes on
            longer ones (see the module docstring). Default ``false``: an error before any model loads.
        vis_cross_attn: write per-word cross-attention heatmaps of each edit.
        vis_factor: latent downsample factor of the visualised layers (2 = 32x32 for 512 px).
        attention_maps: cross-attention maps recorded for the visualisation and the cluster-word matching:
            ``official`` (averaged scaled scores before modulation and softmax, what the official attention
            store keeps) or ``probs`` (averaged probabilities).
        cluster_inversion_feature: write the inversion-feature clustering study (``sd_study/``).
        num_clusters: KMeans clusters per frame (official 3).
        cluster_factor: resolution of the clustered self-attention maps (2 = 32x32 for 512 px, official).
        cluster_words: words to match clusters to (default: candidate nouns of the source prompt).
        use_freeu, freeu: FreeU during inversion and editing (official switch; b1=1.2, b2=1.5, s1=s2=1).
        self_attention: replace the full-frame ST-Layout self-attention on the layers it selects (e.g.
            :class:`~videoedit.attention.consistent.ConsistentSelfAttention`), keeping VideoGrain's
            cross-attention modulation; during inversion too when its ``during_inversion`` is set.
        inversion: :class:`InversionSettings` (official: 50 steps, guidance 1, posterior sample, ControlNet).
    """

    name = "videograin"
    pipeline_class = VideoGrainPipeline
    # masks are needed for local prompts only: a global prompt alone edits one full-frame region
    # (the official code refuses it; see check_inputs)
    needs_masks = False

    def __init__(
        self,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        modulation: ModulationSettings | Mapping | None = None,
        frame_span: str = "all",
        window_size: int = 4,
        chunk_budget_mb: float = 256,
        use_pnp: bool = False,
        inject_step: int = 0,
        pnp_alignment: str = "official",
        pnp_branches: str = "official",
        flatten_factors: Sequence[int] = (1,),
        flow_backend: str = "auto",
        raft_weights: str | None = None,
        blending_percentage: float = 0.0,
        skip_mode: str = "official",
        blend_source: str = "noised",
        negative_prompt_target: str = "controlnet",
        skip_missing_local_prompts: bool = False,
        vis_cross_attn: bool = False,
        vis_factor: int = 2,
        attention_maps: str = "official",
        cluster_inversion_feature: bool = False,
        num_clusters: int = 3,
        cluster_factor: int = 2,
        cluster_words: Sequence[str] | None = None,
        use_freeu: bool = False,
        freeu: FreeUSettings | Mapping | None = None,
        self_attention: ConsistentSelfAttention | Mapping | None = None,
        inversion: InversionSettings | Mapping | None = None,
    ) -> None:
        inversion = dict(inversion or {}) if not isinstance(inversion, InversionSettings) else inversion
        if isinstance(inversion, dict):
            inversion.setdefault("vae_sample", True)  # official: latent_dist.sample()
            if inversion.get("frame_batch_size"):
                raise ConfigError(
                    "VideoGrain's full-frame attention needs every frame in one batch: method.inversion.frame_batch_size must be null."
                )
        super().__init__(num_inference_steps, guidance_scale, inversion)
        self.modulation = _settings(modulation)
        if frame_span not in ("all", "window"):
            raise ConfigError(f"method.frame_span must be 'all' or 'window', got {frame_span!r}")
        if window_size < 1:
            raise ConfigError(f"method.window_size must be >= 1, got {window_size}")
        self.span = FrameSpan(frame_span, int(window_size))
        self.chunk_budget_mb = float(chunk_budget_mb)
        self.use_pnp = bool(use_pnp)
        if int(inject_step) < 0:
            raise ConfigError(f"method.inject_step must be >= 0, got {inject_step}")
        # "inject during the first inject_step steps": more steps than the schedule has means all of them
        self.inject_step = min(int(inject_step), self.num_inference_steps) if use_pnp else 0
        if pnp_alignment not in ("official", "same"):
            raise ConfigError(f"method.pnp_alignment must be official or same, got {pnp_alignment!r}")
        self.pnp_alignment = pnp_alignment
        if pnp_branches not in ("official", "cond"):
            raise ConfigError(f"method.pnp_branches must be official or cond, got {pnp_branches!r}")
        self.pnp_branches = pnp_branches
        self.flatten_factors = tuple(int(f) for f in flatten_factors or ())
        self.flow_backend = flow_backend
        self.raft_weights = raft_weights
        self.blending_percentage = float(blending_percentage)
        if not 0 <= self.blending_percentage < 1:
            raise ConfigError(f"method.blending_percentage must be in [0, 1), got {blending_percentage}")
        if skip_mode not in ("official", "consistent"):
            raise ConfigError(f"method.skip_mode must be official or consistent, got {skip_mode!r}")
        self.skip_mode = skip_mode
        self.blend_source = blend_source
        self.negative_prompt_target = negative_prompt_target
        self.skip_missing_local_prompts = bool(skip_missing_local_prompts)
        self.vis_cross_attn = bool(vis_cross_attn)
        self.vis_factor = int(vis_factor)
        if attention_maps not in ("official", "probs"):
            raise ConfigError(f"method.attention_maps must be official or probs, got {attention_maps!r}")
        self.attention_maps = attention_maps
        self.cluster_inversion_feature = bool(cluster_inversion_feature)
        self.num_clusters = int(num_clusters)
        self.cluster_factor = int(cluster_factor)
        self.cluster_words = list(cluster_words) if cluster_words else None
        if isinstance(freeu, Mapping):
            freeu = FreeUSettings(**dict(freeu))
        self.freeu = (freeu or FreeUSettings()) if use_freeu else None
        if isinstance(self_attention, Mapping):
            self_attention = ConsistentSelfAttention(**dict(self_attention))
        self.self_attention = self_attention
        self._trajectories: tuple[str, dict[int, Trajectories]] | None = None

    @property
    def seed_dependent(self) -> bool:
        """DDIM sampling is deterministic; the seed acts through the re-noised blending source and a consistent
        self-attention's draws."""
        return self.blend_source == "noised" or self.self_attention is not None

    # ------------------------------------------------------------------ checks
    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        """Local prompts against the regions and the full prompt's tokens (before any model loads).

        Without region masks, only global prompts are accepted: the whole frame is then one region
        (:func:`full_frame_masks`): ST-Layout attention over all frames' tokens, no latent blending.
        The official code refuses a clip without masks (VideoGrain issue 10).
        """
        super().check_inputs(source, requests)
        if source.masks is None:
            with_locals = [r for r in requests if r.local_prompts]
            if with_locals:
                raise ConfigError(
                    f"Method 'videograin' needs region masks for the local prompts "
                    f"{list(with_locals[0].local_prompts)} of editing prompt {with_locals[0].index}, but the "
                    "data has none: set data.masks_dir and data.regions, build masks from clicks "
                    "(data=video_sam data.mask_builder.prompts=<yaml>, or python -m annotators.masks), or "
                    "give a global prompt only (prompts=['<prompt>']: the whole frame is one region)."
                )
            logger.info("no region masks: global prompt(s) only, the whole frame is one region")
        tokenizer = (
            load_clip_tokenizer()
        )  # SD-1.5/2.x share this vocabulary: check spans before loading models
        for request in requests:
            if len(request.local_prompts) > len(source.regions):
                raise PromptError(
                    f"Editing prompt {request.index} has {len(request.local_prompts)} local prompts "
                    f"{list(request.local_prompts)} but the data has {len(source.regions)} regions {source.regions}: "
                    "give one local prompt per region, in the order of data.regions ('' for a region without one)."
                )
            if len(request.local_prompts) < len(source.regions):
                logger.info(
                    "regions %s have no local prompt: they group self-attention and blending only",
                    source.regions[len(request.local_prompts) :],
                )
            locate_local_prompts(
                tokenizer, request.prompt, request.local_prompts, self.skip_missing_local_prompts
            )

    # ------------------------------------------------------------------ inversion
    def pnp_record_timesteps(self, scheduler) -> list[int]:
        """The inversion timesteps whose features the first ``inject_step`` editing steps inject."""
        schedule = sampling_timesteps(scheduler, self.num_inference_steps)
        offset = int(self.num_inference_steps * self.blending_percentage)
        found = (
            pnp_source_timestep(schedule, schedule_position(i, offset, self.skip_mode), self.pnp_alignment)
            for i in range(self.inject_step)
        )
        return [t for t in found if t is not None]

    @property
    def final_feature_pass(self) -> bool:
        # 'same' alignment injects at t = 981 features the inversion loop never computes (it evaluates
        # 1..961): one more UNet call on the final latent records them
        return self.inject_step > 0 and self.pnp_alignment == "same"

    @property
    def inversion_branches(self) -> tuple[str, ...] | None:
        # official: the inversion runs ["", source prompt] (guidance 1), so PnP has features of both branches
        return ("uncond", "cond") if self.inject_step and self.pnp_branches == "official" else None

    def inversion_signature(self) -> dict[str, Any]:
        return {
            "attention": "videograin-full-frame",
            "span": [self.span.mode, self.span.window_size],
            "flatten": list(self.flatten_factors),
            "flow": [self.flow_backend, self.raft_weights] if self.flatten_factors else None,
            "pnp": [
                self.inject_step,
                self.pnp_alignment,
                self.pnp_branches,
                self.blending_percentage,
                self.skip_mode,
            ]
            if self.inject_step
            else None,
            "cluster": [self.cluster_factor, self.attention_maps] if self.cluster_inversion_feature else None,
            "freeu": self.freeu.__dict__ if self.freeu else None,
            "self_attention": self.self_attention.settings()
            if self.self_attention is not None and self.self_attention.during_inversion
            else None,
        }

    def _flows(self, source: SourceVideo) -> torch.Tensor:
        estimator = build_flow_estimator(self.flow_backend, self.raft_weights)
        if estimator.name != "raft":
            logger.warning(
                "FLATTEN uses OpenCV DIS optical flow: the official code uses RAFT-large, whose weights were not "
                "found (method.raft_weights=<file> or torch hub's cache); trajectories will differ"
            )
        logger.info("FLATTEN: %s optical flow between %d frames", estimator.name, source.num_frames)
        return video_flows(source.frames_uint8(), estimator, "forward")

    def trajectories(
        self, source: SourceVideo, flows: torch.Tensor, latent_size: tuple[int, int]
    ) -> dict[int, Trajectories]:
        """FLATTEN trajectories at each configured factor (computed once per clip)."""
        if not self.flatten_factors:
            return {}
        key = tensor_digest(flows)
        if self._trajectories is None or self._trajectories[0] != key:
            generator = torch.Generator().manual_seed(0)
            trajs = {
                f: build_trajectories(
                    flows, source.num_frames, (latent_size[0] // f, latent_size[1] // f), generator
                )
                for f in self.flatten_factors
            }
            self._trajectories = (key, trajs)
        return self._trajectories[1]

    @contextlib.contextmanager
    def inversion_context(
        self, pipe: VideoGrainPipeline, source: SourceVideo, state: StepState
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Full-frame attention (+ FLATTEN) during inversion, recording PnP features and clustering maps."""
        extras: dict[str, torch.Tensor] = {}
        latent_size = (source.size[0] // pipe.vae_scale_factor, source.size[1] // pipe.vae_scale_factor)
        trajectories = {}
        if self.flatten_factors:
            flows = self._flows(source)
            extras[_FLOWS_KEY] = flows
            trajectories = self.trajectories(source, flows, latent_size)
        pnp = PnPFeatures(self.pnp_record_timesteps(pipe.scheduler)) if self.inject_step else None
        recorders = {}
        if self.cluster_inversion_feature:
            if self.cluster_factor not in pipe.downsample_factors():
                raise ConfigError(
                    f"method.cluster_factor={self.cluster_factor} is not a resolution of this UNet "
                    f"(latent downsample factors {pipe.downsample_factors()})."
                )
            recorders[self.cluster_factor] = AttentionRecorder(self.cluster_factor, True, True)
        controller = VideoGrainController(
            state=state,
            span=self.span,
            chunk_budget_bytes=int(self.chunk_budget_mb * 2**20),
            trajectories=trajectories,
            pnp=pnp,
            recorders=recorders,
            record_logits=self.attention_maps == "official",
        )
        self_attention = None
        if self.self_attention is not None and self.self_attention.during_inversion:
            self_attention = self.self_attention.factory(state, seed=0)
        with pipe.videograin_attention(controller, self.freeu, self_attention):
            yield extras
        if pnp is not None:
            extras.update(pnp.features)
        recorder = recorders.get(self.cluster_factor)
        if recorder is not None and recorder.self_average() is not None:
            extras[_CLUSTER_SELF] = recorder.self_average()
            extras[_CLUSTER_CROSS] = recorder.cross_average()

    def inversion_artifacts(
        self, source: SourceVideo, inversion: InversionOutput, pipe: VideoGrainPipeline
    ) -> Artifacts:
        """``sd_study/`` and ``attn_inv/`` of the clustering study (``cluster_inversion_feature``)."""
        artifacts = Artifacts()
        if not self.cluster_inversion_feature or _CLUSTER_SELF not in inversion.extras:
            return artifacts
        self_maps = inversion.extras[_CLUSTER_SELF]
        cross = inversion.extras.get(_CLUSTER_CROSS)
        n = self_maps.shape[1]
        h0, w0 = inversion.source_latents.shape[-2:]
        grid = (h0 // self.cluster_factor, w0 // self.cluster_factor)
        if grid[0] * grid[1] != n:
            raise RuntimeError(f"clustering maps have {n} tokens, expected a {grid} grid")
        words = self.cluster_words or candidate_nouns(source.prompt)
        spans = word_token_spans(pipe.tokenizer, source.prompt, words) if words else []
        study = cluster_study(self_maps, grid, self.num_clusters, cross, spans)
        frames = source.frames_uint8()
        size = source.size
        res = grid[0]
        pca = upsample_rgb(study.pca, size)
        labels_rgb = render_labels(study.labels, size)
        for i in range(source.num_frames):
            artifacts.images[f"sd_study/pca_attn_{res}_{i}.png"] = pca[i]
            artifacts.images[f"sd_study/cluster_attn_{res}_{i}.png"] = labels_rgb[i]
            for cluster, word in study.words[i].items():
                mask = (study.labels[i] == cluster).astype(np.uint8) * 255
                mask_img = upsample_rgb(np.repeat(mask[None, ..., None], 3, -1), size)[0]
                artifacts.images[f"sd_study/frame_{i}_cluster{cluster}_{word.replace(' ', '_')}.png"] = (
                    mask_img
                )
        artifacts.arrays[f"sd_study/cluster_attn_{res}_inv_self.npy"] = study.labels
        artifacts.arrays[f"attn_inv/inv_self_avg_{res}.npy"] = self_maps.numpy()
        if cross is not None:
            artifacts.arrays[f"attn_inv/inv_cross_avg_{res}.npy"] = cross.numpy()
            if spans:
                artifacts.videos["sd_study/cross_attn.mp4"] = cross_attention_video(
                    frames, cross, grid, spans
                )
        artifacts.info["clusters"] = {
            "grid": list(grid),
            "words": [sorted(set(w.values())) for w in study.words[:1]],
        }
        return artifacts

    # ------------------------------------------------------------------ editing
    def edit(
        self,
        pipe: VideoGrainPipeline,
        source: SourceVideo,
        inversion: InversionOutput,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        latent_size = tuple(inversion.source_latents.shape[-2:])
        trajectories = {}
        if self.flatten_factors:
            flows = inversion.extras.get(_FLOWS_KEY)
            if flows is None:
                flows = self._flows(source)
            trajectories = self.trajectories(source, flows, latent_size)
        state = StepState()
        out = pipe(
            prompt=request.prompt,
            local_prompts=request.local_prompts,
            inversion=inversion,
            masks=source.masks if source.masks is not None else full_frame_masks(source),
            control=control,
            negative_prompt=request.negative_prompt,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
            modulation=self.modulation,
            frame_span=self.span,
            chunk_budget_mb=self.chunk_budget_mb,
            trajectories=trajectories,
            pnp=PnPFeatures.from_extras(inversion.extras) if self.inject_step else None,
            inject_step=self.inject_step,
            pnp_alignment=self.pnp_alignment,
            blending_percentage=self.blending_percentage,
            skip_mode=self.skip_mode,
            blend_source=self.blend_source,
            negative_prompt_target=self.negative_prompt_target,
            skip_missing_local_prompts=self.skip_missing_local_prompts,
            record_cross_attention_factor=self.vis_factor if self.vis_cross_attn else None,
            freeu=self.freeu,
            self_attention=None
            if self.self_attention is None
            else self.self_attention.factory(state, generator.initial_seed()),
            attention_maps=self.attention_maps,
            generator=generator,
            state=state,
        )
        result = EditResult(frames=out.frames)
        result.info["local_prompt_spans"] = [list(s) if s else None for s in out.prompt_layout.spans]
        if out.cross_attention is not None:
            words = [w for w in request.prompt.replace(",", " ").split() if w]
            spans = word_token_spans(pipe.tokenizer, request.prompt, words)
            # drawn over the source frames, as the official visualisation
            video = cross_attention_video(
                source.frames_uint8(), out.cross_attention, out.cross_attention_grid, spans
            )
            base = f"sample/visualization_denoise/{request.name}"
            result.videos[f"{base}/cross_attn.mp4"] = video
            for i, frame in enumerate(video):
                result.images[f"{base}/frame_{i}_cross_attn.png"] = frame
        return result

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "modulation": self.modulation.__dict__,
            "frame_span": [self.span.mode, self.span.window_size],
            "pnp": {
                "inject_step": self.inject_step,
                "alignment": self.pnp_alignment,
                "branches": self.pnp_branches,
            },
            "flatten_factors": list(self.flatten_factors),
            "blending_percentage": self.blending_percentage,
            "freeu": self.freeu.__dict__ if self.freeu else None,
            "self_attention": None if self.self_attention is None else self.self_attention.settings(),
        }
