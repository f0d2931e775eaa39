import time

import pytest
import torch

from videoedit.errors import ModelLoadError
from videoedit.models.loading import (
    folder_fingerprint,
    load_stable_diffusion,
    resolve_dtype,
    select_repo_files,
)


def _save_tiny(components, folder):
    components.unet.save_pretrained(folder / "unet")
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    components.scheduler.save_pretrained(folder / "scheduler")
    components.controlnet.save_pretrained(folder / "controlnet")


def test_save_and_load_round_trip(tiny_components, tmp_path):
    _save_tiny(tiny_components, tmp_path / "sd")
    assert (tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_stable_diffusion(
        str(tmp_path / "sd"), controlnet=str(tmp_path / "sd" / "controlnet"), dtype="fp32"
    )
    assert len(loaded.tokenizer) == 49408
    assert loaded.scheduler.config.steps_offset == 1 and not loaded.scheduler.config.set_alpha_to_one
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = tiny_components.text_encoder(torch.tensor([[49406, 320, 2368, 49407]]))[0]
    for name in ("unet", "controlnet"):
        a, b = getattr(tiny_components, name), getattr(loaded, name)
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb), name
    ref = tiny_components.unet(x, 5, text).sample
    torch.testing.assert_close(loaded.unet(x, 5, text).sample, ref)
    assert loaded.fingerprint.startswith("dir:") and "+cn:dir:" in loaded.fingerprint


def test_model_root_lookup(tiny_components, tmp_path):
    _save_tiny(tiny_components, tmp_path / "ckpt" / "stable-diffusion-v1-5")
    loaded = load_stable_diffusion(
        "some-org/stable-diffusion-v1-5", model_root=str(tmp_path / "ckpt"), dtype="fp32"
    )
    assert loaded.info["model_folder"].endswith("stable-diffusion-v1-5")


def test_missing_weights_fail_fast_with_the_override(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_stable_diffusion("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "model=tiny" in message


def test_missing_local_folder():
    with pytest.raises(ModelLoadError, match=r"folder not found: /no/such/sd.*model=tiny"):
        load_stable_diffusion("/no/such/sd")


def test_missing_controlnet_fails_before_loading_the_unet(tiny_components, tmp_path):
    _save_tiny(tiny_components, tmp_path / "sd")
    with pytest.raises(ModelLoadError, match="ControlNet weights 'lllyasviel/control_v11p_sd15_openpose'"):
        load_stable_diffusion(str(tmp_path / "sd"), controlnet="lllyasviel/control_v11p_sd15_openpose")


def test_select_repo_files_prefers_safetensors_and_variants():
    files = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.non_ema.bin",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "v1-5-pruned.ckpt",
    ]
    assert select_repo_files(files, ["unet", "vae"]) == [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "model_index.json",
    ]
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in select_repo_files(
        files, ["unet"], variant="fp16"
    )


def test_fingerprint_changes_with_weights(tmp_path):
    (tmp_path / "unet").mkdir()
    w = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(b"1234")
    first = folder_fingerprint(tmp_path)
    w.write_bytes(b"12345")
    assert folder_fingerprint(tmp_path) != first


def test_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bf16") == torch.bfloat16


def test_controlnet_for_another_text_width_is_refused(tiny_components, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    from videoedit.models.tiny import tiny_unet_config

    _save_tiny(tiny_components, tmp_path / "sd")
    wide_unet = UNet2DConditionModel(**tiny_unet_config(cross_attention_dim=64))  # as SD 2.x next to SD 1.5
    ControlNetModel.from_unet(wide_unet).save_pretrained(tmp_path / "cn")
    with pytest.raises(ModelLoadError, match=r"text embeddings of width 64 but .* has 32"):
        load_stable_diffusion(str(tmp_path / "sd"), controlnet=str(tmp_path / "cn"), dtype="fp32")
