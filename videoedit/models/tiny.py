"""A tiny, Stable-Diffusion-shaped model stack with seeded random weights, for offline runs and tests.

It has SD-1.5's topology (4 down/up levels, 2 resnets per down block, 3 per up block, cross-attention
in the first three levels, a ControlNet built from the UNet, an 8x VAE, a CLIP text encoder with the
real 49408-token tokenizer) at a fraction of the width. Every layer name that SD-1.5 has
(``up_blocks.1.resnets.1``, ``up_blocks.3.attentions.2``...) exists here, so methods that address layers
by name run unchanged. Its outputs are noise-like: it exercises the code paths, not the image quality.
"""

from __future__ import annotations

import hashlib
import json

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from videoedit.models.components import StableDiffusionComponents, sd_ddim_scheduler
from videoedit.models.tokenizer import CLIP_MAX_LENGTH, CLIP_VOCAB_SIZE, load_clip_tokenizer


def tiny_unet_config(
    block_out_channels: tuple[int, ...] = (32, 32, 64, 64), cross_attention_dim: int = 32
) -> dict:
    n = len(block_out_channels)
    return dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def build_tiny_components(
    seed: int = 0,
    controlnet: str | bool | None = None,
    block_out_channels: tuple[int, ...] = (32, 32, 64, 64),
    cross_attention_dim: int = 32,
    text_layers: int = 2,
    tokenizer_cache_dir: str | None = None,
) -> StableDiffusionComponents:
    """Build the tiny stack.

    Args:
        seed: seeds every random weight; the same seed gives bit-identical models.
        controlnet: when truthy (e.g. the ControlNet id of the selected ``controlnet`` config), add a
            random ControlNet shaped for this UNet. The id is only recorded: its real weights would
            not fit the tiny UNet.
        block_out_channels: UNet widths per level (4 levels = SD-1.5 topology).
        cross_attention_dim: text embedding width.
        text_layers: CLIP text encoder depth.
        tokenizer_cache_dir: where to keep the generated tokenizer files.
    """
    block_out_channels = tuple(block_out_channels)
    unet_cfg = tiny_unet_config(block_out_channels, cross_attention_dim)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(
            block_out_channels=(32, 32, 64, 64),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=256,
        )
        text_config = CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=cross_attention_dim,
            intermediate_size=2 * cross_attention_dim,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            max_position_embeddings=CLIP_MAX_LENGTH,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
        text_encoder = CLIPTextModel(text_config)
        cnet = None
        if controlnet:
            cnet = ControlNetModel.from_unet(
                unet, conditioning_embedding_out_channels=(8,) * (len(block_out_channels) - 1) + (16,)
            )
            # from_unet copies the UNet's encoder and zero-initialises the convolutions that read the
            # condition and write the residuals, which makes a fresh ControlNet a no-op. Give those
            # seeded random weights so the condition visibly reaches the UNet.
            # The condition embedding gets variance-preserving (He) weights and zero biases, so a
            # random network still passes the condition's structure on instead of its biases.
            for name, module in cnet.named_modules():
                if not isinstance(module, torch.nn.Conv2d):
                    continue
                if name.startswith("controlnet_cond_embedding"):
                    torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    torch.nn.init.zeros_(module.bias)
                elif name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                    module.reset_parameters()
    finally:
        torch.random.set_rng_state(generator_state)
    for module in (unet, vae, text_encoder, cnet):
        if module is not None:
            module.eval().requires_grad_(False)
    tokenizer = load_clip_tokenizer(tokenizer_cache_dir)
    spec = {
        "seed": seed,
        "unet": unet_cfg,
        "text_layers": text_layers,
        "controlnet": bool(controlnet),
        "torch": torch.__version__.split("+")[0],
    }
    fingerprint = (
        "tiny-" + hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    )
    info = {"model": "tiny (random weights)", "seed": str(seed)}
    if controlnet:
        info["controlnet"] = f"tiny random ControlNet (standing in for {controlnet})"
    return StableDiffusionComponents(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=sd_ddim_scheduler(),
        controlnet=cnet,
        fingerprint=fingerprint,
        info=info,
    )


def build_random_sd15_components(
    seed: int = 0, controlnet: bool = True, tokenizer_cache_dir: str | None = None
) -> StableDiffusionComponents:
    """Components with SD-1.5's exact shapes (UNet 860M, ControlNet, VAE, CLIP ViT-L text encoder)
    and seeded random weights. For speed and memory benchmarks without downloading weights; the
    outputs are meaningless."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            cross_attention_dim=768,
            attention_head_dim=8,
            layers_per_block=2,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB_SIZE,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=CLIP_MAX_LENGTH,
                hidden_act="quick_gelu",
            )
        )
        cnet = ControlNetModel.from_unet(unet) if controlnet else None
    finally:
        torch.random.set_rng_state(generator_state)
    for module in (unet, vae, text_encoder, cnet):
        if module is not None:
            module.eval().requires_grad_(False)
    return StableDiffusionComponents(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(tokenizer_cache_dir),
        scheduler=sd_ddim_scheduler(),
        controlnet=cnet,
        fingerprint=f"random-sd15-{seed}-{bool(controlnet)}",
        info={"model": "SD-1.5-shaped, random weights"},
    )
