"""CLIP scores of an edited video: CLIP-T (frame-text) and CLIP-F (consecutive frames).

* ``clip_t``: mean over frames of the cosine similarity between a frame's CLIP image embedding and the
  edit prompt's text embedding (the full target prompt);
* ``clip_f``: mean over consecutive pairs of the cosine similarity between the two frames' image
  embeddings (StreamV2V's "consistency" in ``tools/clip_score.py``).

Both are plain cosines in [-1, 1]; papers often print them x100 (CLIP-T ~ 25-35, CLIP-F ~ 90-98 with
ViT-L/14). Values depend on the CLIP model: the metrics record its name; compare runs scored with the
same one.

Weights: CLIP weights are not part of the project. ``load_clip_encoder(spec)`` builds an encoder from

* ``"auto"``: the first of :data:`AUTO_CANDIDATES` found **in the local Hugging Face cache** (never
  downloads); ``None`` when there is none;
* ``"<hub id or folder>"`` or ``"hf:<hub id or folder>"``: a transformers ``CLIPModel`` (e.g.
  ``openai/clip-vit-large-patch14``, or a folder with ``config.json``);
* ``"open_clip:<arch>:<pretrained tag or weights file>"``: an open_clip model
  (e.g. ``open_clip:ViT-B-32:openai``).

Explicit specs load like any hub model (downloaded unless ``HF_HUB_OFFLINE=1``).
Frames are ``(F, H, W, 3)`` uint8.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# (kind, name, hub repo holding its weights) tried in order by clip_model="auto"; only files already
# in the local Hugging Face cache are used (open_clip's openai weights live in timm's repos).
AUTO_CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("hf", "openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14"),
    ("hf", "openai/clip-vit-base-patch32", "openai/clip-vit-base-patch32"),
    ("open_clip", "ViT-L-14:openai", "timm/vit_large_patch14_clip_224.openai"),
    ("open_clip", "ViT-B-32:openai", "timm/vit_base_patch32_clip_224.openai"),
)
_WEIGHT_FILES = {
    "hf": ("model.safetensors", "pytorch_model.bin"),
    "open_clip": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
}


def _cached(repo: str, filenames: Sequence[str], cache_dir: str | None) -> bool:
    """Whether one of ``filenames`` of ``repo`` is in the local HF cache (cheap: no model imports)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(path, str) and Path(path).is_file():
            return True
    return False


class ClipUnavailable(RuntimeError):
    """No CLIP model could be built; the message says why (it goes into ``metrics.json``)."""


def _features(out: Any) -> torch.Tensor:
    """transformers < 5 returns the projected embeddings, >= 5 an output whose ``pooler_output`` they are."""
    return out if torch.is_tensor(out) else out.pooler_output


class ClipEncoder(ABC):
    """Unit-norm CLIP embeddings of frames and texts."""

    name: str = "clip"
    batch_size: int = 16

    @abstractmethod
    def _encode_images(self, frames: np.ndarray) -> torch.Tensor: ...

    @abstractmethod
    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...

    @torch.no_grad()
    def encode_images(self, frames: np.ndarray) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 -> ``(N, D)`` float32, unit norm."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        chunks = [
            self._encode_images(frames[i : i + self.batch_size]).float().cpu()
            for i in range(0, len(frames), self.batch_size)
        ]
        return F.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``M`` strings -> ``(M, D)`` float32, unit norm."""
        return F.normalize(self._encode_texts(list(texts)).float().cpu(), dim=-1)


class OpenClipEncoder(ClipEncoder):
    """An open_clip model: ``model.encode_image``/``encode_text`` with its own preprocess and tokenizer.

    Args:
        model: an ``open_clip`` CLIP model.
        preprocess: PIL image -> ``(3, S, S)`` tensor (``open_clip.image_transform(...)``).
        tokenizer: strings -> ``(M, 77)`` token ids (``open_clip.get_tokenizer(...)``).
        name: recorded in the metrics.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable,
        tokenizer: Callable,
        name: str = "open_clip",
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.name, self.device, self.batch_size = name, torch.device(device), batch_size
        self.dtype = next(self.model.parameters()).dtype

    def _encode_images(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames])
        return self.model.encode_image(pixels.to(self.device, self.dtype))

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


class TransformersClipEncoder(ClipEncoder):
    """A transformers ``CLIPModel`` with its image processor and tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        image_processor: Callable,
        tokenizer: Callable,
        name: str = "transformers",
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.name, self.device, self.batch_size = name, torch.device(device), batch_size
        self.dtype = next(self.model.parameters()).dtype

    def _encode_images(self, frames: np.ndarray) -> torch.Tensor:
        pixels = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        return _features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        max_length = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        tokens = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        )
        return _features(self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device)))


def clip_scores(frames: np.ndarray, prompt: str, encoder: ClipEncoder) -> dict[str, Any]:
    """CLIP-T and CLIP-F of one clip ``(F, H, W, 3)`` uint8 (see the module docstring).

    Returns:
        ``{"clip_t", "clip_f", "clip_t_per_frame", "clip_model"}``; ``clip_f`` is ``nan`` for one frame.
    """
    images = encoder.encode_images(frames)  # (F, D)
    text = encoder.encode_texts([prompt])  # (1, D)
    per_frame = (images @ text.T)[:, 0]
    pairs = (images[:-1] * images[1:]).sum(-1)
    return {
        "clip_t": float(per_frame.mean()),
        "clip_f": float(pairs.mean()) if len(pairs) else float("nan"),
        "clip_t_per_frame": [float(v) for v in per_frame],
        "clip_model": encoder.name,
    }


# ------------------------------------------------------------------------------------------ loading


def _load_transformers(name: str, device: str, local_only: bool, cache_dir: str | None) -> ClipEncoder:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    kwargs = {"local_files_only": local_only, "cache_dir": cache_dir}
    try:
        model = CLIPModel.from_pretrained(name, **kwargs)
        processor = CLIPImageProcessor.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ClipUnavailable(f"could not load the CLIP model {name!r} with transformers: {err}") from err
    if len(tokenizer) < 1000:  # an offline load can return a degenerate tokenizer without raising
        raise ClipUnavailable(f"the tokenizer of {name!r} has only {len(tokenizer)} tokens: incomplete files")
    return TransformersClipEncoder(model, processor, tokenizer, name=f"hf:{name}", device=device)


def _open_clip_weights(arch: str, tag: str, cache_dir: str | None) -> str | None:
    """A local file of open_clip's pretrained ``(arch, tag)`` in the HF cache, or ``None``."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    repo = str(cfg.get("hf_hub", "")).strip("/")
    if not repo:
        return None
    for filename in _WEIGHT_FILES["open_clip"]:
        path = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(path, str) and Path(path).is_file():
            return path
    return None


def _load_open_clip(spec: str, device: str, local_only: bool, cache_dir: str | None) -> ClipEncoder:
    import open_clip

    arch, _, pretrained = spec.partition(":")
    if not arch or not pretrained:
        raise ClipUnavailable(f"open_clip spec must be 'open_clip:<arch>:<tag or file>', got {spec!r}")
    kwargs: dict[str, Any] = {}
    source = pretrained
    if not Path(pretrained).expanduser().is_file():
        cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        if not cfg:
            raise ClipUnavailable(f"open_clip has no pretrained weights {pretrained!r} for {arch!r}")
        local = _open_clip_weights(arch, pretrained, cache_dir)
        if local is None and local_only:
            raise ClipUnavailable(f"open_clip {arch}:{pretrained} is not in the local cache")
        if local is not None:  # a file path loses the tag's settings: pass them explicitly
            source = local
            kwargs = {
                "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
                "image_mean": cfg.get("mean"),
                "image_std": cfg.get("std"),
            }
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=source, cache_dir=cache_dir, **kwargs
        )
    except Exception as err:  # open_clip raises RuntimeError/OSError/... for missing or bad files
        raise ClipUnavailable(f"could not load open_clip {arch}:{pretrained}: {err}") from err
    return OpenClipEncoder(
        model, preprocess, open_clip.get_tokenizer(arch), name=f"open_clip:{arch}:{pretrained}", device=device
    )


def load_clip_encoder(spec: str | None, device: str = "cpu", cache_dir: str | None = None) -> ClipEncoder:
    """Build the CLIP encoder named by ``spec`` (see the module docstring).

    Args:
        spec: ``"auto"``, ``"hf:<id or folder>"``, ``"<id or folder>"``, ``"open_clip:<arch>:<tag or file>"``.
        device: where to run it.
        cache_dir: the Hugging Face cache to use (default: the usual one).

    Raises:
        ClipUnavailable: no spec, nothing found locally for ``auto``, or the model failed to load.
    """
    if spec is None or str(spec).strip().lower() in ("", "none", "null", "off"):
        raise ClipUnavailable("no CLIP model configured (metrics.clip_model=null)")
    spec = str(spec)
    if spec == "auto":
        tried = []
        for kind, name, repo in AUTO_CANDIDATES:
            tried.append(f"{kind}:{name}")
            if not _cached(repo, _WEIGHT_FILES[kind], cache_dir):
                continue
            try:
                if kind == "hf":
                    return _load_transformers(name, device, local_only=True, cache_dir=cache_dir)
                return _load_open_clip(name, device, local_only=True, cache_dir=cache_dir)
            except ClipUnavailable as err:
                logger.warning("CLIP candidate %s:%s is cached but did not load: %s", kind, name, err)
        raise ClipUnavailable(
            "no CLIP weights found locally (looked for " + ", ".join(tried) + " in the Hugging Face cache); "
            "set metrics.clip_model=<hub id, folder or open_clip:<arch>:<tag>> to score CLIP-T/CLIP-F"
        )
    if spec.startswith("open_clip:"):
        return _load_open_clip(spec[len("open_clip:") :], device, local_only=False, cache_dir=cache_dir)
    name = spec[len("hf:") :] if spec.startswith("hf:") else spec
    return _load_transformers(name, device, local_only=Path(name).expanduser().is_dir(), cache_dir=cache_dir)


# ------------------------------------------------------------------------------- checks (no loading)

_OFF = ("", "none", "null", "off")


def _hub_offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def check_clip_model(spec: str | None, cache_dir: str | None = None) -> None:
    """Check, without loading anything, that an explicit CLIP spec can be found.

    ``None``/``"none"`` and ``"auto"`` always pass (``auto`` finding nothing is a recorded skip). A
    folder must hold ``config.json`` and weights; a hub id or open_clip tag must be in the local cache,
    or, online, exist on the hub.

    Raises:
        ClipUnavailable: with what was looked for and where.
    """
    if spec is None or str(spec).strip().lower() in (*_OFF, "auto"):
        return
    spec = str(spec)
    if spec.startswith("open_clip:"):
        arch, _, pretrained = spec[len("open_clip:") :].partition(":")
        if not arch or not pretrained:
            raise ClipUnavailable(f"open_clip spec must be 'open_clip:<arch>:<tag or file>', got {spec!r}")
        if Path(pretrained).expanduser().is_file():
            return
        try:
            import open_clip
        except ImportError as err:
            raise ClipUnavailable(
                f"{spec} needs the open_clip package (pip install open_clip_torch)"
            ) from err
        if not open_clip.get_pretrained_cfg(arch, pretrained):
            raise ClipUnavailable(f"open_clip has no pretrained weights {pretrained!r} for {arch!r}")
        if _open_clip_weights(arch, pretrained, cache_dir) is None and _hub_offline():
            raise ClipUnavailable(f"{spec} is not in the local cache and HF_HUB_OFFLINE is set")
        return
    name = spec[len("hf:") :] if spec.startswith("hf:") else spec
    folder = Path(name).expanduser()
    if folder.is_dir():
        missing = [f for f in ("config.json",) if not (folder / f).is_file()]
        if not any((folder / f).is_file() for f in _WEIGHT_FILES["hf"]):
            missing.append(" or ".join(_WEIGHT_FILES["hf"]))
        if missing:
            raise ClipUnavailable(f"the CLIP folder {folder} has no {', '.join(missing)}")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ClipUnavailable(f"no CLIP model folder at {name}")
    if _cached(name, _WEIGHT_FILES["hf"], cache_dir):
        return
    if _hub_offline():
        raise ClipUnavailable(f"{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import file_exists

        if any(file_exists(name, f) for f in _WEIGHT_FILES["hf"]):
            return
    except Exception as err:
        raise ClipUnavailable(f"could not look up {name} on the hub ({type(err).__name__}: {err})") from err
    raise ClipUnavailable(f"the hub repo {name} has no CLIP weights ({' / '.join(_WEIGHT_FILES['hf'])})")


def expected_clip_name(spec: str | ClipEncoder | None, cache_dir: str | None = None) -> str | None:
    """The ``clip_model`` name metrics computed with ``spec`` record, found without loading a model
    (``auto``: the first candidate in the local cache; ``None``: no CLIP scores)."""
    if isinstance(spec, ClipEncoder):
        return spec.name
    if spec is None or str(spec).strip().lower() in _OFF:
        return None
    spec = str(spec)
    if spec == "auto":
        for kind, name, repo in AUTO_CANDIDATES:
            if _cached(repo, _WEIGHT_FILES[kind], cache_dir):
                return f"{kind}:{name}"
        return None
    if spec.startswith("open_clip:") or spec.startswith("hf:"):
        return spec
    return f"hf:{spec}"
