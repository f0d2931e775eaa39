"""``method=flowedit`` (and ``method=flowedit_layout``): inversion-free FlowEdit on Wan 2.1, optionally with
region-aware (layout) attention on the DiT.

The method's config keys are :class:`~videoedit.pipelines.pipeline_flowedit.FlowEditSettings`' fields (given
once, there, and passed to the pipeline as they are) plus ``layout`` and ``skip_missing_local_prompts``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from videoedit.attention.wan_layout import DiTLayoutSettings
from videoedit.data.source import SourceVideo
from videoedit.errors import PromptError
from videoedit.inversion.cache import InversionCache
from videoedit.layout.prompts import locate_local_prompts
from videoedit.methods.base import EditMethod, EditRequest, EditResult, Reconstruction
from videoedit.pipelines.pipeline_flowedit import FlowEditPipeline, FlowEditSettings

logger = logging.getLogger(__name__)


@dataclass
class FlowEditMethod(FlowEditSettings, EditMethod):
    """FlowEdit on a flow-matching video backbone.

    On a backbone that takes condition maps (Wan VACE: :meth:`EditMethod.uses_control`), the source and the
    target velocity both see the source clip's maps (the ``controlnet`` group's), so their difference keeps the
    structure they fix.

    Keys: :class:`FlowEditSettings`' fields, and

    Attributes:
        layout: :class:`~videoedit.attention.wan_layout.DiTLayoutSettings` (or its fields) for region-aware
            editing with the data's masks and the requests' local prompts; ``None``: plain FlowEdit.
        skip_missing_local_prompts: ignore a local prompt that is not a token span of its full prompt
            (VideoGrain's official behaviour) instead of stopping with an error.
    """

    name: ClassVar[str] = "flowedit"
    backbones: ClassVar[tuple[str, ...]] = ("wan",)
    pipeline_class: ClassVar[type] = FlowEditPipeline

    layout: DiTLayoutSettings | Mapping | None = None
    skip_missing_local_prompts: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.layout = DiTLayoutSettings.build(self.layout)

    @property
    def needs_masks(self) -> bool:  # type: ignore[override]
        return self.layout is not None

    # ------------------------------------------------------------------ checks
    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        super().check_inputs(source, requests)
        if not source.prompt.strip():
            logger.warning(
                "data.prompt is empty: FlowEdit's source velocity uses the empty prompt (describe the source clip "
                "in data.prompt for faithful edits)"
            )
        if self.layout is None:
            if any(r.local_prompts for r in requests):
                logger.info(
                    "method=flowedit without layout uses only the full prompt; local prompts are ignored"
                )
            return
        for request in requests:
            if len(request.local_prompts) > len(source.regions):
                raise PromptError(
                    f"Editing prompt {request.index} has {len(request.local_prompts)} local prompts "
                    f"{list(request.local_prompts)} but the data has {len(source.regions)} regions {source.regions}: "
                    "give one local prompt per region, in the order of data.regions ('' for a region without one)."
                )

    def check_prompts(self, tokenizer, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        """Local prompts must be token spans of their full prompt in the backbone's (UMT5) tokenization."""
        if self.layout is None:
            return
        for request in requests:
            locate_local_prompts(
                tokenizer,
                request.prompt,
                request.local_prompts,
                self.skip_missing_local_prompts,
                max_length=512,
            )

    # ------------------------------------------------------------------ the source: its latents, no inversion
    def prepare(
        self,
        pipe: FlowEditPipeline,
        source: SourceVideo,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        cache: InversionCache | None,
        model_fingerprint: str,
        seed: int = 0,
    ) -> torch.Tensor:
        """The source's normalised VAE latents ``(1, 16, F', h, w)`` (on the CPU between edits)."""
        return pipe.encode_video(source.frames).cpu()

    def prepared_info(self, prepared: torch.Tensor) -> dict[str, Any]:
        return {"cache": "none", "inversion_free": True, "latent_shape": list(prepared.shape)}

    def reconstruct(self, pipe, source, prepared, control, controlnet_conditioning_scale) -> Reconstruction:
        """FlowEdit has no inversion: the only loss before editing is the VAE's round trip."""
        return Reconstruction(
            frames=pipe.decode_latents(prepared).cpu(),
            definition="VAE encode/decode round trip (FlowEdit is inversion-free: nothing else to reconstruct)",
        )

    # ------------------------------------------------------------------ editing
    def edit(
        self,
        pipe: FlowEditPipeline,
        source: SourceVideo,
        prepared: torch.Tensor,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        out = pipe(
            source_latents=prepared,
            source_prompt=source.prompt,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            settings=self,
            local_prompts=request.local_prompts if self.layout is not None else (),
            masks=source.masks if self.layout is not None else None,
            layout=self.layout,
            skip_missing_local_prompts=self.skip_missing_local_prompts,
            generator=generator,
            control=control,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
        )
        info: dict[str, Any] = {"steps_run": out.steps_run}
        if out.prompt_layout is not None:
            info["local_prompt_spans"] = [list(s) if s else None for s in out.prompt_layout.spans]
        return EditResult(frames=out.frames, info=info)

    def describe(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self).items() if k != "layout"}
        return {
            **super().describe(),
            **settings,
            "layout": None if self.layout is None else asdict(self.layout),
        }
