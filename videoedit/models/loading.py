"""Loading real Stable Diffusion (+ ControlNet) weights from a local folder or a Hugging Face hub id.

Resolution order for ``pretrained_model_name_or_path``:

1. an existing folder (diffusers layout: ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
   ``scheduler/``; a ControlNet folder holds ``config.json`` + weights);
2. ``<model_root>/<name_or_path>`` or ``<model_root>/<last path component>`` (e.g. the official
   VideoGrain ``./ckpt/stable-diffusion-v1-5`` layout with ``model_root=./ckpt``);
3. the Hugging Face cache (no network);
4. a download from the hub, unless ``HF_HUB_OFFLINE=1``: one quick metadata request first, so that a
   machine without network fails in about a second instead of after a minute of retries.

Anything that fails raises :class:`~videoedit.errors.ModelLoadError` naming the model id and the
``model=tiny`` override. There is no silent fallback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from videoedit.errors import ConfigError, ModelLoadError
from videoedit.models.components import StableDiffusionComponents, sd_ddim_scheduler
from videoedit.models.tokenizer import check_clip_tokenizer

logger = logging.getLogger(__name__)

SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CONFIG_SUFFIXES = (".json", ".txt")


def _hint(name: str, what: str, tiny: str = "tiny") -> str:
    return (
        f"Download the {what} (e.g. `hf download {name}`), or point the config at a local folder "
        f"in diffusers layout (model.pretrained_model_name_or_path=/path, or set VIDEOEDIT_MODEL_ROOT). "
        f"To run without any weights, use the tiny offline model: add `model={tiny}` to the command."
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def select_repo_files(
    filenames: Sequence[str], subfolders: Sequence[str], variant: str | None = None
) -> list[str]:
    """The files of a diffusers repo needed for ``subfolders`` (``""`` = the repo root).

    Per folder: every config (``.json``/``.txt``) and one weights file, preferring the requested
    ``variant`` (``diffusion_pytorch_model.fp16.safetensors``), then safetensors over ``.bin``.
    """
    chosen: list[str] = []
    for sub in subfolders:
        prefix = f"{sub}/" if sub else ""
        here = [f for f in filenames if f.startswith(prefix) and "/" not in f[len(prefix) :]]
        chosen += [f for f in here if f.endswith(_CONFIG_SUFFIXES)]
        weights = [f for f in here if f.endswith(_WEIGHT_SUFFIXES) and "non_ema" not in f]

        def rank(f: str) -> tuple[int, int]:
            parts = Path(f).name.split(".")
            is_variant = len(parts) == 3 and parts[1] == variant
            plain = len(parts) == 2
            return (0 if is_variant else 1 if plain else 2, 0 if f.endswith(".safetensors") else 1)

        if weights:
            best = min(weights, key=rank)
            if rank(best)[0] < 2:
                chosen.append(best)
    if "model_index.json" in filenames and len(subfolders) > 1:
        chosen.append("model_index.json")
    return chosen


def find_local(name_or_path: str, model_root: str | None = None, revision: str | None = None) -> Path | None:
    """The local folder holding ``name_or_path`` without any network: the folder itself, one under
    ``model_root``, or a Hugging Face cache snapshot; ``None`` when there is none."""
    candidates = [Path(name_or_path).expanduser()]
    if model_root:
        root = Path(model_root).expanduser()
        candidates += [root / name_or_path, root / Path(name_or_path).name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if _is_path(name_or_path):
        return None
    import huggingface_hub as hub

    try:
        return Path(hub.snapshot_download(name_or_path, revision=revision, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, or a broken cache entry
        return None


def _is_path(name_or_path: str) -> bool:
    return (
        Path(name_or_path).is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    )


def read_local_config(
    name_or_path: str, filename: str, model_root: str | None = None, revision: str | None = None
) -> dict | None:
    """A small JSON config of a model that is already on disk (``unet/config.json``...), else ``None``.

    Used to check a run against the model before loading its weights; never downloads.
    """
    folder = find_local(name_or_path, model_root, revision)
    if folder is None or not (folder / filename).is_file():
        return None
    try:
        return json.loads((folder / filename).read_text())
    except (OSError, ValueError):
        return None


def resolve_pretrained(
    name_or_path: str,
    subfolders: Sequence[str],
    what: str,
    model_root: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
    tiny: str = "tiny",
) -> Path:
    """A local folder holding ``name_or_path`` (see the module docstring for the order); errors name the
    ``model=<tiny>`` override."""
    local = find_local(name_or_path, model_root, revision)
    if local is not None:
        return local
    if _is_path(name_or_path):
        raise ModelLoadError(f"{what} folder not found: {name_or_path}. " + _hint(name_or_path, what, tiny))

    import huggingface_hub as hub

    if _hub_offline():
        raise ModelLoadError(
            f"Could not load the {what} '{name_or_path}': it is not a local folder"
            f"{' (also looked under model_root=' + str(model_root) + ')' if model_root else ''}, not in the "
            f"Hugging Face cache, and HF_HUB_OFFLINE=1 forbids a download. " + _hint(name_or_path, what, tiny)
        )
    try:
        info = hub.model_info(name_or_path, revision=revision, timeout=10)
    except Exception as err:
        raise ModelLoadError(
            f"Could not load the {what} '{name_or_path}': not found locally and the hub is not reachable or "
            f"does not have it ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            + _hint(name_or_path, what, tiny)
        ) from err
    files = select_repo_files([s.rfilename for s in info.siblings or []], subfolders, variant)
    if not files:
        raise ModelLoadError(
            f"The hub repo '{name_or_path}' has no diffusers weights for {list(subfolders)}."
        )
    try:
        return Path(hub.snapshot_download(name_or_path, revision=revision, allow_patterns=files))
    except Exception as err:
        raise ModelLoadError(
            f"Download of '{name_or_path}' failed: {err}. " + _hint(name_or_path, what, tiny)
        ) from err


def folder_fingerprint(folder: Path) -> str:
    """Identify weights without hashing gigabytes: hub commit, or file names, sizes and mtimes."""
    parts = folder.resolve().parts
    if "snapshots" in parts:  # Hugging Face cache: .../models--org--name/snapshots/<commit>
        i = parts.index("snapshots")
        return f"hub:{parts[i - 1]}@{parts[i + 1]}"
    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in (*_WEIGHT_SUFFIXES, *_CONFIG_SUFFIXES):
            st = f.stat()
            digest.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return f"dir:{folder.resolve()}:{digest.hexdigest()[:16]}"


def _load(loader, what: str, name: str, tiny: str = "tiny", **kwargs):
    try:
        return loader(**kwargs)
    except Exception as err:
        raise ModelLoadError(
            f"Could not load the {what} from '{name}' ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
            + _hint(name, what, tiny)
        ) from err


def load_controlnet(
    pretrained_model_name_or_path: str,
    dtype: torch.dtype = torch.float32,
    model_root: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> tuple[ControlNetModel, str]:
    """Load a ControlNet (folder or hub id); returns the model and its fingerprint."""
    folder = resolve_pretrained(
        pretrained_model_name_or_path, [""], "ControlNet weights", model_root, revision, variant
    )
    model = _load(
        ControlNetModel.from_pretrained,
        "ControlNet weights",
        pretrained_model_name_or_path,
        pretrained_model_name_or_path=str(folder),
        torch_dtype=dtype,
        variant=variant,
    )
    return model.eval().requires_grad_(False), folder_fingerprint(folder)


def load_stable_diffusion(
    pretrained_model_name_or_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
    controlnet: str | None = None,
    dtype: str | torch.dtype = "auto",
    model_root: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> StableDiffusionComponents:
    """Load SD-1.5/2.x components (and a ControlNet) from a local folder or the hub.

    Args:
        pretrained_model_name_or_path: hub id or folder in diffusers layout.
        controlnet: hub id or folder of a ControlNet, or ``None``.
        dtype: ``"auto"`` (fp16 on CUDA, fp32 otherwise), ``"fp16"``, ``"bf16"``, ``"fp32"`` or a torch dtype.
        model_root: an extra folder to look in before the hub (``VIDEOEDIT_MODEL_ROOT``).
        revision: hub revision (branch, tag or commit).
        variant: weights variant (e.g. ``"fp16"``).

    Raises:
        ModelLoadError: weights are missing or unreadable (the message names the id and ``model=tiny``).
    """
    torch_dtype = resolve_dtype(dtype)
    name = pretrained_model_name_or_path
    # Resolve both before loading either, so that a missing ControlNet fails in seconds, not after
    # the UNet has been read.
    folder = resolve_pretrained(
        name, SD_SUBFOLDERS, "Stable Diffusion weights", model_root, revision, variant
    )
    cn_folder = None
    if controlnet:
        cn_folder = resolve_pretrained(controlnet, [""], "ControlNet weights", model_root, None, variant)
    what = "Stable Diffusion weights"
    common = dict(pretrained_model_name_or_path=str(folder), torch_dtype=torch_dtype)
    unet = _load(
        UNet2DConditionModel.from_pretrained, what, name, subfolder="unet", variant=variant, **common
    )
    vae = _load(AutoencoderKL.from_pretrained, what, name, subfolder="vae", variant=variant, **common)
    text_encoder = _load(
        CLIPTextModel.from_pretrained, what, name, subfolder="text_encoder", variant=variant, **common
    )
    tokenizer = _load(
        CLIPTokenizer.from_pretrained,
        what,
        name,
        pretrained_model_name_or_path=str(folder),
        subfolder="tokenizer",
    )
    check_clip_tokenizer(tokenizer)
    scheduler_config = _load(
        DDIMScheduler.load_config,
        what,
        name,
        pretrained_model_name_or_path=str(folder),
        subfolder="scheduler",
    )
    cnet, cn_print = None, ""
    if cn_folder is not None:
        cnet, cn_print = load_controlnet(str(cn_folder), torch_dtype, variant=variant)
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    if cnet is not None and cnet.config.cross_attention_dim != unet.config.cross_attention_dim:
        raise ModelLoadError(
            f"The ControlNet '{controlnet}' was trained for text embeddings of width {cnet.config.cross_attention_dim} "
            f"but '{name}' has {unet.config.cross_attention_dim} (an SD-1.5 ControlNet with SD 2.x, or the reverse). "
            "Pick a ControlNet made for this model (controlnet.pretrained_model_name_or_path=...) or controlnet=none."
        )
    fingerprint = folder_fingerprint(folder) + (f"+cn:{cn_print}" if cn_print else "")
    info = {"model": name, "model_folder": str(folder)}
    if controlnet:
        info.update(controlnet=controlnet, controlnet_folder=str(cn_folder))
    return StableDiffusionComponents(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=sd_ddim_scheduler(scheduler_config),
        controlnet=cnet,
        fingerprint=fingerprint,
        info=info,
    )


_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str | None = None) -> torch.dtype:
    """``"auto"`` -> fp16 on CUDA, fp32 elsewhere (bf16/fp16 are ~30x slower on these CPUs)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device is None:
            return torch.float16 if torch.cuda.is_available() else torch.float32
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"Unknown dtype {dtype!r}: use auto, fp32, fp16 or bf16.") from None
