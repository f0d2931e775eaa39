"""Model components: real weights (hub id or local folder) and the tiny offline stack."""

from videoedit.models.components import StableDiffusionComponents, sd_ddim_scheduler
from videoedit.models.loading import load_controlnet, load_stable_diffusion, resolve_dtype
from videoedit.models.tiny import build_tiny_components
from videoedit.models.tokenizer import load_clip_tokenizer

__all__ = [
    "StableDiffusionComponents",
    "build_tiny_components",
    "load_clip_tokenizer",
    "load_controlnet",
    "load_stable_diffusion",
    "resolve_dtype",
    "sd_ddim_scheduler",
]
