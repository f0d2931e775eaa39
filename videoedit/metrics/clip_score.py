"""CLIP-based metrics of an edited clip, by their published definitions (``videoedit.metrics.definitions``).

* ``clip_t``: mean over frames of ``logit_scale.exp() x cos(text, frame)`` with projected embeddings
  (V2VBench ``clip_text_alignment``, LOVEU-TGVE ``clip_score_text``; x100 for OpenAI's CLIP);
* ``frame_consistency_v2v``: mean over consecutive frames of ``max(0, cos)`` of the vision tower's pooled
  output before the projection (V2VBench ``clip_consistency``);
* ``frame_consistency_tgve``: mean cosine over all ordered pairs of distinct frames of the projected image
  embeddings (LOVEU-TGVE ``clip_score_frame``);
* ``pick_score``: the ``clip_t`` formula with the PickScore model (its own ``logit_scale``).

The formulas are a few lines of tensor code on top of transformers' ``CLIPModel`` (the model the published
code uses). torchmetrics' ``CLIPScore`` is not used: it clamps scores at 0, which neither benchmark does.

Weights come from a local folder (``config.json`` + weights, the processor files beside them) or a hub
id. Hub ids are read from the local Hugging Face cache only, unless ``allow_download`` (then downloaded
once): a missing model is a clear :class:`ClipUnavailable`, recorded in ``metrics.json``, never a hang.
Frames are ``(F, H, W, 3)`` uint8.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # V2VBench and LOVEU-TGVE
DEFAULT_PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # PickScore's own processor
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OFF = ("", "none", "null", "off", "false")


class ClipUnavailable(RuntimeError):
    """A CLIP-type model could not be built; the message says why (it goes into ``metrics.json``)."""


def is_off(spec: Any) -> bool:
    """Whether a model spec means "no model" (``None``, ``"none"``, ``"null"``, ``"off"``, ``""``)."""
    return spec is None or str(spec).strip().lower() in OFF


class ClipScorer:
    """A transformers ``CLIPModel`` with its image processor and tokenizer: unit-norm embeddings.

    Args:
        model: a ``transformers.CLIPModel`` (CLIP, PickScore...).
        image_processor: a ``CLIPImageProcessor`` (resize, centre crop, normalise).
        tokenizer: a CLIP tokenizer (at least 1000 tokens).
        name: the model id or folder, recorded in ``metrics.json``.
        device: where to run.
        batch_size: frames per forward.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image_processor: Any,
        tokenizer: Any,
        name: str,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.name, self.device, self.batch_size = name, torch.device(device), batch_size
        self.dtype = next(self.model.parameters()).dtype

    @property
    def logit_scale(self) -> float:
        """``logit_scale.exp()`` of the model (100 for OpenAI's CLIP models)."""
        return float(self.model.logit_scale.detach().float().exp())

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F, H, W, 3)`` uint8 -> ``(projected (F, D), pooled (F, Dv))`` float32, each unit norm.

        ``pooled`` is the vision tower's ``pooler_output`` (before ``visual_projection``), ``projected`` the
        image embedding (``get_image_features``).
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        projected, pooled = [], []
        for start in range(0, len(frames), self.batch_size):
            chunk = list(frames[start : start + self.batch_size])
            pixels = self.image_processor(images=chunk, return_tensors="pt")["pixel_values"]
            out = self.model.vision_model(pixel_values=pixels.to(self.device, self.dtype)).pooler_output
            pooled.append(out.float().cpu())
            projected.append(self.model.visual_projection(out).float().cpu())
        return F.normalize(torch.cat(projected), dim=-1), F.normalize(torch.cat(pooled), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``M`` strings -> ``(M, D)`` float32 unit-norm text embeddings (truncated at 77 tokens)."""
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        out = self.model.text_model(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
        ).pooler_output
        return F.normalize(self.model.text_projection(out).float().cpu(), dim=-1)


# ------------------------------------------------------------------------------------------ formulas


def text_alignment(images: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale x cos`` of each frame with the text: ``images (F, D)``, ``text (1, D)`` unit norm -> ``(F,)``."""
    return scale * (images @ text[0])


def frame_consistency_v2v(pooled: torch.Tensor) -> float:
    """V2VBench: mean over consecutive pairs of ``max(0, cos)``; ``pooled (F, Dv)`` unit norm; ``nan`` if F < 2."""
    if len(pooled) < 2:
        return float("nan")
    return float((pooled[:-1] * pooled[1:]).sum(-1).clamp_min(0).mean())


def frame_consistency_tgve(projected: torch.Tensor) -> float:
    """LOVEU-TGVE: mean cosine over all ordered pairs ``i != j``; ``projected (F, D)`` unit norm; ``nan`` if F < 2."""
    n = len(projected)
    if n < 2:
        return float("nan")
    sims = projected @ projected.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def clip_scores(frames: np.ndarray, prompt: str, scorer: ClipScorer) -> dict[str, Any]:
    """CLIP-T and both frame consistencies of one clip ``(F, H, W, 3)`` uint8 with the edit's full prompt.

    Returns:
        ``{"clip_t", "clip_t_per_frame", "frame_consistency_v2v", "frame_consistency_tgve"}``; the
        consistencies are ``nan`` for one frame.
    """
    projected, pooled = scorer.encode_frames(frames)
    text = scorer.encode_texts([prompt])
    per_frame = text_alignment(projected, text, scorer.logit_scale)
    return {
        "clip_t": float(per_frame.mean()),
        "clip_t_per_frame": [float(v) for v in per_frame],
        "frame_consistency_v2v": frame_consistency_v2v(pooled),
        "frame_consistency_tgve": frame_consistency_tgve(projected),
    }


def pick_score(frames: np.ndarray, prompt: str, scorer: ClipScorer) -> dict[str, Any]:
    """PickScore of one clip: ``{"pick_score", "pick_score_per_frame"}`` (``scorer`` holds the PickScore model)."""
    projected, _ = scorer.encode_frames(frames)
    per_frame = text_alignment(projected, scorer.encode_texts([prompt]), scorer.logit_scale)
    return {"pick_score": float(per_frame.mean()), "pick_score_per_frame": [float(v) for v in per_frame]}


# ------------------------------------------------------------------------------------------ loading


def _cached_file(repo: str, filename: str, cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    return isinstance(path, str) and Path(path).is_file()


def _looks_like_path(spec: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else (``./x``, ``/a/b``, ``a/b/c``) is a path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1


def check_model_spec(
    spec: str | None, key: str, allow_download: bool = False, cache_dir: str | None = None
) -> str | None:
    """Why the model ``spec`` (``metrics.<key>``) cannot be loaded, without loading it; ``None`` when it can.

    A folder must hold ``config.json`` and weights; a hub id must be in the local Hugging Face cache
    unless ``allow_download``.
    """
    if is_off(spec):
        return f"not configured (metrics.{key}=null)"
    spec = str(spec)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        missing = [] if (folder / "config.json").is_file() else ["config.json"]
        if not any((folder / f).is_file() for f in WEIGHT_FILES):
            missing.append(" or ".join(WEIGHT_FILES))
        return f"the model folder {folder} has no {', '.join(missing)}" if missing else None
    if _looks_like_path(spec):
        return f"no model folder at {spec} (metrics.{key})"
    if allow_download:
        return None
    if _cached_file(spec, "config.json", cache_dir) and any(
        _cached_file(spec, f, cache_dir) for f in WEIGHT_FILES
    ):
        return None
    return (
        f"{spec} is not in the local Hugging Face cache (metrics.allow_download=false): download it once "
        f"with `hf download {spec}`, give a local folder (metrics.{key}=<folder>) or set "
        "metrics.allow_download=true"
    )


def load_clip_scorer(
    spec: str | None,
    key: str = "clip_model",
    processor: str | None = None,
    device: str | torch.device = "cpu",
    allow_download: bool = False,
    cache_dir: str | None = None,
) -> ClipScorer:
    """Build a :class:`ClipScorer` from a hub id or folder (``processor``: where the image processor and
    tokenizer are, default the model's own).

    Raises:
        ClipUnavailable: with the reason (not configured, not cached, incomplete files, load error).
    """
    reason = check_model_spec(spec, key, allow_download, cache_dir)
    if reason is None and processor is not None and processor != spec:
        reason = _check_processor(processor, key, allow_download, cache_dir)
    if reason is not None:
        raise ClipUnavailable(reason)
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    name = str(spec)
    source = str(processor or spec)
    local = {"cache_dir": cache_dir, "local_files_only": not allow_download}
    try:
        model = CLIPModel.from_pretrained(name, **local)
        image_processor = CLIPImageProcessor.from_pretrained(source, **local)
        tokenizer = AutoTokenizer.from_pretrained(source, **local)
    except (OSError, ValueError) as err:
        raise ClipUnavailable(f"could not load {name} (processor {source}) with transformers: {err}") from err
    if len(tokenizer) < 1000:  # an offline load can return a degenerate tokenizer without raising
        raise ClipUnavailable(f"the tokenizer of {source} has only {len(tokenizer)} tokens: incomplete files")
    return ClipScorer(model, image_processor, tokenizer, name=name, device=device)


def _check_processor(spec: str, key: str, allow_download: bool, cache_dir: str | None) -> str | None:
    folder = Path(spec).expanduser()
    if folder.is_dir():
        has = (folder / "preprocessor_config.json").is_file()
        return None if has else f"the processor folder {folder} has no preprocessor_config.json"
    if _looks_like_path(spec):
        return f"no processor folder at {spec} (metrics.{key})"
    if allow_download or _cached_file(spec, "preprocessor_config.json", cache_dir):
        return None
    return (
        f"the processor {spec} is not in the local Hugging Face cache (metrics.allow_download=false): "
        f"`hf download {spec}` or set metrics.allow_download=true"
    )
