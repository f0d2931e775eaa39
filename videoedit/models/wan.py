"""Wan 2.1 (text-to-video DiT) components: real weights in diffusers layout, and the offline twins.

Real weights: ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (or a local folder in the same layout): ``transformer/``
(:class:`~diffusers.WanTransformer3DModel`; Wan VACE's ``Wan-AI/Wan2.1-VACE-1.3B-diffusers``:
:class:`~diffusers.WanVACETransformer3DModel`, the same DiT plus a control branch), ``vae/`` (:class:`~diffusers.AutoencoderKLWan`), ``text_encoder/``
(UMT5-XXL encoder), ``tokenizer/`` and ``scheduler/`` (UniPC with ``flow_shift`` 3.0 for 480p). The transformer
and text encoder run in bf16 on CUDA and fp32 on the CPU; the VAE stays in fp32, as diffusers recommends.
Editing uses a flow-matching Euler scheduler with the model's own shift (FlowEdit's update is an Euler step).

Offline twins: :func:`build_tiny_wan` (the same classes from small configs, seeded random weights, a real
UMT5-style unigram tokenizer trained offline on a fixed word list; ``vace=True``: the VACE transformer) and :func:`build_random_wan_1_3b` (the
1.3B transformer's exact shapes, random weights, for cost measurements).
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanTransformer3DModel,
    WanVACETransformer3DModel,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from videoedit.backbones.base import Components, VideoShapeRule, preserved_rng
from videoedit.errors import ModelLoadError
from videoedit.io.atomic import atomic_dir
from videoedit.models.loading import _hint, _load, folder_fingerprint, resolve_dtype, resolve_pretrained
from videoedit.paths import default_cache_root

logger = logging.getLogger(__name__)

WAN_SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
#: Wan 2.1's flow shift for 480p (the diffusers scheduler config of the 1.3B model; 5.0 for 720p)
WAN21_FLOW_SHIFT = 3.0
#: UMT5 context length Wan was trained with (prompt embeddings are zero-padded to it)
WAN_TEXT_LENGTH = 512
WAN21_T2V = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WAN21_VACE = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"


@dataclass
class WanComponents(Components):
    """Wan-2.1-shaped components (the ``wan`` backbone family).

    Attributes:
        transformer: the DiT; its ``blocks.<i>.attn1`` is self-attention over every video token,
            ``attn2`` cross-attention to the UMT5 prompt tokens. A :class:`~diffusers.WanVACETransformer3DModel`
            (Wan VACE) adds ``vace_blocks.<j>``, a control branch whose outputs are added after the blocks
            ``config.vace_layers`` (see :attr:`vace`).
        vae: the causal video VAE (x4 in time keeping the first frame, x8 in space), kept in fp32.
        text_encoder, tokenizer: UMT5 encoder and its tokenizer.
        scheduler: flow-matching Euler with the model's shift.
        max_sequence_length: prompt tokens (512 for Wan 2.1).
    """

    family: ClassVar[str] = "wan"
    fp32_modules: ClassVar[tuple[str, ...]] = ("vae",)

    transformer: WanTransformer3DModel | WanVACETransformer3DModel
    vae: AutoencoderKLWan
    text_encoder: UMT5EncoderModel
    tokenizer: PreTrainedTokenizerBase
    scheduler: FlowMatchEulerDiscreteScheduler
    max_sequence_length: int = WAN_TEXT_LENGTH
    fingerprint: str = ""
    info: dict[str, str] = field(default_factory=dict)

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder}

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    @property
    def vace(self) -> bool:
        """Whether the transformer has VACE's control branch (it then takes pose/depth/... control latents)."""
        return is_vace(self.transformer)

    def shape_rule(self) -> VideoShapeRule:
        return wan_shape_rule(self.vae.config, self.transformer.config)

    def pipeline(self):
        """The family's base pipeline (:class:`~videoedit.pipelines.pipeline_wan.WanVideoEditPipeline`)."""
        from videoedit.pipelines.pipeline_wan import WanVideoEditPipeline

        return WanVideoEditPipeline.from_components(self)


def is_vace(transformer: torch.nn.Module) -> bool:
    """Whether ``transformer`` is Wan VACE's (:class:`~diffusers.WanVACETransformer3DModel`)."""
    return isinstance(transformer, WanVACETransformer3DModel)


def wan_shape_rule(vae_config: Any, transformer_config: Any) -> VideoShapeRule:
    """``4k+1`` frames (the VAE keeps frame 0 and compresses the rest by 4) and sides multiple of 16
    (VAE x8, patch x2), read from the configs (mappings or diffusers config objects)."""

    def get(config: Any, key: str, default: Any) -> Any:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        return default if value is None else value

    temporal = int(get(vae_config, "scale_factor_temporal", 4))
    spatial = int(get(vae_config, "scale_factor_spatial", 8))
    patch = get(transformer_config, "patch_size", (1, 2, 2))
    return VideoShapeRule(
        size_multiple=spatial * int(patch[1]),
        frame_multiple=temporal * int(patch[0]),
        frame_offset=1,
        what="Wan 2.1",
    )


def flow_match_scheduler(shift: float = WAN21_FLOW_SHIFT) -> FlowMatchEulerDiscreteScheduler:
    """Flow-matching Euler with a static shift (``sigma' = s*sigma / (1 + (s-1)*sigma)``), 1000 train steps."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(shift))


def scheduler_shift(config: dict | None) -> float:
    """The shift a Wan scheduler config asks for (``flow_shift`` of UniPC, ``shift`` of Euler)."""
    config = config or {}
    for key in ("flow_shift", "shift"):
        if config.get(key) is not None:
            return float(config[key])
    return WAN21_FLOW_SHIFT


# ----------------------------------------------------------------------------------------- real weights


def load_wan(
    pretrained_model_name_or_path: str = WAN21_T2V,
    dtype: str | torch.dtype = "auto",
    model_root: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
    shift: float | None = None,
    vace: bool = False,
) -> WanComponents:
    """Load Wan 2.1 T2V (or, with ``vace``, Wan VACE) components from a local folder or the hub (safetensors
    preferred).

    Args:
        pretrained_model_name_or_path: hub id or folder in diffusers layout.
        dtype: the transformer's and text encoder's dtype: ``auto`` (bf16 on CUDA, fp32 on the CPU),
            ``fp32``, ``fp16``, ``bf16``. The VAE is always fp32.
        model_root: a folder searched before the hub (``VIDEOEDIT_MODEL_ROOT``).
        revision, variant: hub revision and weights variant.
        shift: the flow shift (``None``: the model's scheduler config, 3.0 for the 1.3B model).
        vace: load ``transformer/`` as :class:`~diffusers.WanVACETransformer3DModel` (Wan VACE: the DiT plus
            its control branch, e.g. ``Wan-AI/Wan2.1-VACE-1.3B-diffusers``).

    Raises:
        ModelLoadError: weights missing or unreadable (names the id and ``model=wan_tiny`` /
            ``model=wan_vace_tiny``), or a folder whose transformer is of the other kind (T2V vs VACE).
    """
    name = pretrained_model_name_or_path
    what = "Wan 2.1 VACE weights" if vace else "Wan 2.1 weights"
    tiny = "wan_vace_tiny" if vace else "wan_tiny"
    torch_dtype = wan_dtype(dtype)
    folder = resolve_pretrained(name, WAN_SUBFOLDERS, what, model_root, revision, variant, tiny=tiny)
    transformer_class = WanVACETransformer3DModel if vace else WanTransformer3DModel
    check_transformer_class(folder, transformer_class, name)
    common = dict(pretrained_model_name_or_path=str(folder), variant=variant)
    transformer = _load(
        transformer_class.from_pretrained,
        what,
        name,
        tiny,
        subfolder="transformer",
        torch_dtype=torch_dtype,
        **common,
    )
    vae = _load(
        AutoencoderKLWan.from_pretrained,
        what,
        name,
        tiny,
        subfolder="vae",
        torch_dtype=torch.float32,
        **common,
    )
    text_encoder = _load(
        UMT5EncoderModel.from_pretrained,
        what,
        name,
        tiny,
        subfolder="text_encoder",
        torch_dtype=torch_dtype,
        **common,
    )
    tokenizer = _load(
        AutoTokenizer.from_pretrained,
        what,
        name,
        tiny,
        pretrained_model_name_or_path=str(folder),
        subfolder="tokenizer",
    )
    check_umt5_tokenizer(tokenizer)
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else None
    for module in (transformer, vae, text_encoder):
        module.eval().requires_grad_(False)
    return WanComponents(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=flow_match_scheduler(shift if shift is not None else scheduler_shift(config)),
        fingerprint=folder_fingerprint(folder),
        info={"model": name, "model_folder": str(folder)},
    )


def check_transformer_class(folder: Path, expected: type, name: str) -> None:
    """Raise :class:`ModelLoadError` when ``folder/transformer/config.json`` names another Wan transformer class
    than ``expected`` (a T2V folder under ``model=wan21_vace_1_3b`` would otherwise fail deep inside diffusers, and
    a VACE folder under ``model=wan21_t2v_1_3b`` would silently drop its control branch)."""
    config = folder / "transformer" / "config.json"
    try:
        found = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError):
        return  # a missing or unreadable config is reported by from_pretrained, with the tiny hint
    if found is None or found == expected.__name__:
        return
    kinds = {
        WanTransformer3DModel.__name__: ("Wan 2.1 text-to-video, no control branch", "model=wan21_t2v_1_3b"),
        WanVACETransformer3DModel.__name__: ("Wan VACE, with a control branch", "model=wan21_vace_1_3b"),
    }
    kind, config_name = kinds.get(found, ("another transformer", None))
    wanted = (
        "a VACE model (e.g. " + WAN21_VACE + ")"
        if expected is WanVACETransformer3DModel
        else "a Wan 2.1 T2V model"
    )
    raise ModelLoadError(
        f"'{name}' holds a {found} ({kind}), not a {expected.__name__}: "
        + (
            f"load it with {config_name} (model.pretrained_model_name_or_path={name}), or "
            if config_name
            else ""
        )
        + f"point model.pretrained_model_name_or_path at {wanted}."
    )


def wan_dtype(dtype: str | torch.dtype, device: torch.device | str | None = None) -> torch.dtype:
    """Wan's ``auto``: bf16 on CUDA (the official precision), fp32 elsewhere."""
    if dtype == "auto":
        cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
        return torch.bfloat16 if cuda else torch.float32
    return resolve_dtype(dtype)


# ----------------------------------------------------------------------------------------- offline twins

#: the tiny transformer: 2 blocks, 2 heads of 12 (``rope`` needs head dims divisible by 6), text width 32
TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)
#: the tiny VACE transformer's control branch: a VACE block after each of the 2 blocks, and VACE's 96 input channels
#: (the control video's inactive and reactive VAE latents, 2 x 16, and its mask packed to 8 x 8 = 64 channels)
TINY_VACE = dict(vace_layers=[0, 1], vace_in_channels=96)
TINY_VAE = dict(
    base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
)
#: Wan 2.1 T2V 1.3B's transformer (its ``transformer/config.json``)
WAN21_1_3B_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
TINY_TEXT_LENGTH = 64
_TOKENIZER_VOCAB = 4000
_TOKENIZER_WORDS = (256, 20000)  # the alphabetic words of CLIP's BPE vocabulary, by rank, used as corpus


def tiny_umt5_tokenizer(cache_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """A real UMT5-style tokenizer (SentencePiece unigram, ``</s>`` appended, ``<pad>`` = 0, no BOS) of 4000
    pieces, trained offline with the ``tokenizers`` library on a fixed corpus (the alphabetic words of the CLIP
    BPE vocabulary that ships with open-clip-torch), saved in transformers layout and loaded back.

    The files are built once into ``cache_dir`` (default: ``$VIDEOEDIT_CACHE_ROOT/tokenizer``, else
    ``~/.cache/videoedit/tokenizer``), in a few seconds, and loaded from there afterwards.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    from videoedit.models.tokenizer import clip_vocab_and_merges

    root = Path(cache_dir) if cache_dir else default_cache_root() / "tokenizer"
    spec = f"umt5-tiny:{_TOKENIZER_VOCAB}:{_TOKENIZER_WORDS}:nfkc:capitalised:ascii"
    folder = root / f"umt5-tiny-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    if not (folder / "tokenizer_config.json").is_file():
        vocab, _ = clip_vocab_and_merges()
        words = [w[:-4] for w in vocab if w.endswith("</w>") and w[:-4].isalpha()]
        corpus = words[_TOKENIZER_WORDS[0] : _TOKENIZER_WORDS[1]]
        corpus += [w.capitalize() for w in corpus[:5000]]  # prompts capitalise names ("Spiderman")
        model = Tokenizer(models.Unigram())
        model.normalizer = normalizers.NFKC()
        model.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=_TOKENIZER_VOCAB,
            special_tokens=["<pad>", "</s>", "<unk>"],
            unk_token="<unk>",
            initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
            show_progress=False,
        )
        model.train_from_iterator(corpus, trainer)
        pieces = [tuple(p) for p in json.loads(model.to_str())["model"]["vocab"]]
        tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
        with atomic_dir(folder) as tmp:
            tokenizer.save_pretrained(str(tmp))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    check_umt5_tokenizer(tokenizer)
    return tokenizer


def check_umt5_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless ``tokenizer`` behaves like Wan's (a sane vocabulary, ``</s>`` appended, ``<pad>``)."""
    ids = tokenizer("a photo of a cat").input_ids
    if len(tokenizer) < 100 or tokenizer.eos_token_id is None or ids[-1] != tokenizer.eos_token_id:
        raise ModelLoadError(
            f"The UMT5 tokenizer looks broken ({len(tokenizer)} tokens, ids {ids}): expected a SentencePiece "
            "vocabulary that appends </s>. " + _hint("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan 2.1 tokenizer")
        )


def build_tiny_wan(
    seed: int = 0,
    tokenizer_cache_dir: str | None = None,
    shift: float = WAN21_FLOW_SHIFT,
    vace: bool = False,
) -> WanComponents:
    """Wan's classes from small configs with seeded random weights (the same seed gives identical models).

    9 frames at 64x64 encode to 3 latent frames of 8x8 (4x4 tokens each after the 2x2 patch).

    ``vace``: the transformer is a :class:`~diffusers.WanVACETransformer3DModel` with :data:`TINY_VACE`'s control
    branch added to the T2V model of the same seed, as VACE adds its branch to a frozen Wan 2.1 T2V: its blocks,
    the VAE and the text encoder are ``vace=False``'s, weight for weight (only ``vace_*`` is new), so at
    conditioning scale 0 it computes exactly what the T2V twin computes.
    """
    tokenizer = tiny_umt5_tokenizer(tokenizer_cache_dir)
    text_config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=TINY_TRANSFORMER["text_dim"],
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with preserved_rng():
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**TINY_TRANSFORMER)
        vae = AutoencoderKLWan(**TINY_VAE)
        text_encoder = UMT5EncoderModel(text_config)
        if vace:  # the seeded stream continues into the control branch; the rest is the T2V model's
            base, transformer = transformer, WanVACETransformer3DModel(**TINY_TRANSFORMER, **TINY_VACE)
            missing, unexpected = transformer.load_state_dict(base.state_dict(), strict=False)
            assert not unexpected and all(k.startswith("vace_") for k in missing), (missing, unexpected)
    for module in (transformer, vae, text_encoder):
        module.eval().requires_grad_(False)
    spec = {"seed": seed, "transformer": TINY_TRANSFORMER, "vae": TINY_VAE, "tokenizer": len(tokenizer)}
    if vace:
        spec["vace"] = TINY_VACE
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return WanComponents(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=flow_match_scheduler(shift),
        max_sequence_length=TINY_TEXT_LENGTH,
        fingerprint=f"wan-{'vace-' if vace else ''}tiny-{digest}",
        info={"model": f"wan_{'vace_' if vace else ''}tiny (random weights)", "seed": str(seed)},
    )


def build_random_wan_1_3b(
    seed: int = 0, tokenizer_cache_dir: str | None = None, shift: float = WAN21_FLOW_SHIFT
) -> WanComponents:
    """The Wan 2.1 1.3B transformer's exact shapes with seeded random weights (about 1.4 B parameters), with the
    tiny VAE and a small text encoder of the real width (4096): for speed and memory measurements of the
    denoiser; outputs are meaningless."""
    tokenizer = tiny_umt5_tokenizer(tokenizer_cache_dir)
    with preserved_rng():
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**WAN21_1_3B_TRANSFORMER)
        vae = AutoencoderKLWan(**TINY_VAE)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=4096,
                d_kv=64,
                d_ff=256,
                num_layers=1,
                num_heads=4,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    for module in (transformer, vae, text_encoder):
        module.eval().requires_grad_(False)
    return WanComponents(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=flow_match_scheduler(shift),
        max_sequence_length=TINY_TEXT_LENGTH,
        fingerprint=f"wan-1.3b-random-{seed}",
        info={"model": "Wan-2.1-1.3B-shaped transformer, random weights"},
    )
