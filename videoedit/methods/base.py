"""What every editing method provides to :func:`videoedit.edit.edit`.

A method is a small class that Hydra instantiates from ``configs/method/<name>.yaml`` (its keys are the
constructor's arguments). It names the backbone families it runs on, checks its inputs cheaply before any
model is loaded, builds its pipeline from the loaded components, prepares the source once per run (a DDIM
inversion, cached on disk, for :class:`~videoedit.methods.inverting.InversionEditMethod`; the clean source
latents for inversion-free methods such as FlowEdit), and edits one request at a time. Adding a method
touches no central ``if method == ...``: a new class, its pipeline, its processors and its config.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from videoedit.backbones.base import Backbone, Components
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError, PromptError
from videoedit.inversion.cache import InversionCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditRequest:
    """One edit: a target prompt (plus local prompts for region-aware methods) and a seed."""

    index: int
    prompt: str
    local_prompts: tuple[str, ...] = ()
    seed: int = 0
    negative_prompt: str = ""

    @property
    def name(self) -> str:
        """File stem in the result tree: ``edit<i>_seed<s>``."""
        return f"edit{self.index}_seed{self.seed}"


def parse_edit_requests(
    prompts: Sequence[str | Sequence[str]], seeds: Sequence[int], negative_prompt: str = ""
) -> list[EditRequest]:
    """Requests from the config's ``prompts`` (each a string or ``[full, local_1, ...]``) x ``sample_seeds``."""
    if not prompts:
        raise PromptError(
            "No editing prompt: set `prompts` (a list of strings or of [full_prompt, local_1, ...])."
        )
    if not seeds:
        raise ConfigError("`sample_seeds` is empty: give at least one seed.")
    requests = []
    for i, item in enumerate(prompts):
        parts = [item] if isinstance(item, str) else [str(p) if p is not None else "" for p in item]
        if not parts or not parts[0].strip():
            raise PromptError(f"Editing prompt {i} has an empty full prompt: {item!r}.")
        for seed in seeds:
            requests.append(EditRequest(i, parts[0], tuple(parts[1:]), int(seed), negative_prompt or ""))
    return requests


@dataclass
class Artifacts:
    """Extra outputs for the result tree, by path relative to the run directory.

    Attributes:
        videos: ``(F, H, W, 3)`` uint8, written as mp4.
        images: ``(H, W, 3)`` uint8, written as png.
        arrays: any array, written with ``numpy.save``.
        info: facts for ``metrics.json``.
    """

    videos: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class EditResult(Artifacts):
    """Output of one edit: ``frames (F, 3, H, W)`` in [-1, 1] plus extra :class:`Artifacts`
    (e.g. attention visualisations)."""

    frames: torch.Tensor | None = None


@dataclass
class Reconstruction:
    """The source rebuilt from what :meth:`EditMethod.prepare` made of it.

    Attributes:
        frames: ``(F, 3, H, W)`` in [-1, 1].
        reference: the source frames they rebuild (``None``: all of ``source.frames``).
        definition: how they were made, for ``metrics.json``.
    """

    frames: torch.Tensor
    definition: str
    reference: torch.Tensor | None = None


class EditMethod(ABC):
    """Base class of editing methods.

    Args:
        num_inference_steps: sampling steps.
        guidance_scale: classifier-free guidance of the target prompt.

    Class attributes:
        name: the method's config name (``method=<name>``).
        backbones: the backbone families it runs on (``"sd"``, ``"wan"``...); any other is refused at
            config-check time, before a model loads.
        needs_masks: whether :meth:`edit` needs region masks (checked before any model is loaded).
        pipeline_class: the pipeline :meth:`build_pipeline` builds (``None``: the family's base pipeline).
    """

    name: ClassVar[str] = ""
    backbones: ClassVar[tuple[str, ...]] = ("sd",)
    needs_masks: ClassVar[bool] = False
    pipeline_class: ClassVar[type | None] = None

    def __init__(self, num_inference_steps: int = 50, guidance_scale: float = 7.5) -> None:
        if num_inference_steps < 1:
            raise ConfigError(f"method.num_inference_steps must be >= 1, got {num_inference_steps}.")
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)

    # ------------------------------------------------------------------ checks (cheap, before models)
    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        """Raise on inputs this method cannot use. Runs before any model is loaded."""
        if self.needs_masks and source.masks is None:
            raise ConfigError(
                f"Method '{self.name}' needs region masks but the data has none: set data.masks_dir and "
                "data.regions (or use data=two_figures)."
            )

    def check_schedule(self, scheduler) -> None:  # noqa: B027 - optional hook, nothing to check by default
        """Raise before any work if the method's settings do not fit the backbone's scheduler."""

    def check_prompts(self, tokenizer, source: SourceVideo, requests: Sequence[EditRequest]) -> None:  # noqa: B027
        """Raise before the model loads on prompts this method cannot use with the backbone's ``tokenizer``
        (called when the backbone can give its tokenizer without loading weights)."""

    def uses_control(self, backbone: Backbone) -> bool:
        """Whether the method feeds the ``controlnet`` group's condition maps to ``backbone`` (otherwise the group
        is ignored, with a log line, and no annotator runs). Default: whenever the backbone takes them (a
        ControlNet on SD, the control branch of Wan VACE); a method that cannot use them overrides this."""
        return backbone.accepts_control

    def build_pipeline(self, components: Components):
        """The pipeline this method runs, over the loaded components."""
        if self.pipeline_class is None:
            return components.pipeline()
        return self.pipeline_class.from_components(components)

    @property
    def seed_dependent(self) -> bool:
        """Whether the edit's seed can change its result (``False`` for deterministic settings: a sweep
        over seeds then repeats one result, which reports say)."""
        return True

    # ------------------------------------------------------------------ the source, once per run
    @abstractmethod
    def prepare(
        self,
        pipe,
        source: SourceVideo,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        cache: InversionCache | None,
        model_fingerprint: str,
        seed: int = 0,
    ) -> Any:
        """Source-side work shared by every edit of the run (an inversion, the source latents...).

        The main process runs it first; under a multi-process launch the others then read any cache it wrote.
        """

    def prepared_info(self, prepared: Any) -> dict[str, Any]:
        """Facts about :meth:`prepare`'s result for ``metrics.json["inversion"]`` (cache status, key)."""
        return {}

    def prepared_artifacts(self, source: SourceVideo, prepared: Any, pipe) -> Artifacts:
        """Outputs derived from the prepared source (written once per run), e.g. attention-feature studies."""
        return Artifacts()

    def reconstruct(
        self,
        pipe,
        source: SourceVideo,
        prepared: Any,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
    ) -> Reconstruction | None:
        """The source rebuilt from :meth:`prepare`'s result (the run's reconstruction PSNR: the first thing to
        check when an edit goes wrong); ``None`` if the method has nothing to reconstruct."""
        return None

    # ------------------------------------------------------------------ editing
    @abstractmethod
    def edit(
        self,
        pipe,
        source: SourceVideo,
        prepared: Any,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        """Run one edit and return its frames (and any extra visualisations)."""

    def describe(self) -> dict[str, Any]:
        """The method's settings, for ``metrics.json``."""
        return {
            "name": self.name,
            "backbones": list(self.backbones),
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "seed_dependent": self.seed_dependent,
        }
