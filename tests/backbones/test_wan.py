"""The Wan 2.1 backbone: loading real-layout folders, the offline twin, its tokenizer, the shape rule; Wan VACE's
transformer (the offline twin, a local folder round trip, missing weights, the wrong kind of folder)."""

import json
import time

import pytest
import torch

from videoedit.backbones.wan import RandomWan13B, TinyWan, Wan21
from videoedit.errors import ConfigError, ModelLoadError, ResolutionError
from videoedit.models.wan import WanComponents, load_wan


def _save(components: WanComponents, folder):
    components.transformer.save_pretrained(folder / "transformer")
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    # the official repo ships UniPC with flow_shift 3.0; editing takes its shift for an Euler schedule
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "UniPCMultistepScheduler",
                "flow_shift": 4.5,
                "prediction_type": "flow_prediction",
            }
        )
    )


def test_save_and_load_round_trip(tiny_wan, tmp_path):
    _save(tiny_wan, tmp_path / "wan")
    assert (tmp_path / "wan" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_wan(str(tmp_path / "wan"), dtype="fp32")
    for name in ("transformer", "vae", "text_encoder"):
        for (na, pa), (_, pb) in zip(
            getattr(tiny_wan, name).state_dict().items(), getattr(loaded, name).state_dict().items()
        ):
            assert torch.equal(pa, pb), f"{name}.{na}"
    assert (
        loaded.tokenizer("Spiderman and Polar Bear").input_ids
        == tiny_wan.tokenizer("Spiderman and Polar Bear").input_ids
    )
    assert loaded.scheduler.config.shift == 4.5  # the folder's flow_shift
    assert loaded.vae.dtype == torch.float32 and loaded.fingerprint.startswith("dir:")
    # the pre-load checks read the folder's own configs
    spec = Wan21(str(tmp_path / "wan"))
    assert spec.shape_rule().size_multiple == 16 and spec.shape_rule().frame_multiple == 4
    assert spec.scheduler().config.shift == 4.5
    assert len(spec.tokenizer()) == len(tiny_wan.tokenizer)


def test_missing_weights_fail_fast_naming_the_tiny_override(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        Wan21().load()
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert (
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in message
        and "model=wan_tiny" in message
        and "hf download" in message
    )
    assert Wan21().tokenizer() is None  # nothing on disk: prompt checks wait for the model


def test_tiny_wan_is_seeded_and_shaped_like_wan(tiny_wan):
    other = TinyWan(seed=1).load()
    assert tiny_wan.fingerprint != other.fingerprint
    same = TinyWan(seed=0).load()
    assert same.fingerprint == tiny_wan.fingerprint
    for pa, pb in zip(same.transformer.parameters(), tiny_wan.transformer.parameters()):
        assert torch.equal(pa, pb)
    names = list(tiny_wan.transformer.attn_processors)
    assert "blocks.0.attn1.processor" in names and "blocks.1.attn2.processor" in names
    assert type(tiny_wan.transformer).__name__ == "WanTransformer3DModel"
    assert type(tiny_wan.vae).__name__ == "AutoencoderKLWan"
    assert type(tiny_wan.text_encoder).__name__ == "UMT5EncoderModel"


def test_tiny_tokenizer_behaves_like_umt5(tiny_wan):
    tok = tiny_wan.tokenizer
    assert len(tok) == 4000 and tok.pad_token_id == 0 and tok.eos_token_id == 1
    ids = tok("Spiderman and Polar Bear").input_ids
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids  # no BOS, </s> appended
    # a word keeps its pieces inside a sentence (so local prompts are token spans of the full prompt)
    local = tok("Polar Bear", add_special_tokens=False).input_ids
    assert any(ids[i : i + len(local)] == local for i in range(len(ids)))


def test_shape_rule_names_nearest_valid_values_and_the_data_keys():
    rule = TinyWan().shape_rule()
    rule.check(9, 64, 128)
    with pytest.raises(
        ResolutionError, match=r"needs 4k\+1 frames .* Use data.num_frames=5 \(nearest valid: 5 or 9\)"
    ):
        rule.check(8, 64, 64)
    with pytest.raises(
        ResolutionError, match=r"multiples of 16. Use data.resize.height=64 data.resize.width=96"
    ):
        rule.check(9, 70, 100, {"resize": {"mode": "center_crop", "height": 70, "width": 100}})


def test_components_keep_the_vae_in_fp32():
    wan = TinyWan().load()
    wan.to("cpu", torch.bfloat16)
    assert wan.transformer.dtype == torch.bfloat16 and wan.text_encoder.dtype == torch.bfloat16
    assert wan.vae.dtype == torch.float32
    assert wan.dtypes() == {"transformer": "bfloat16", "vae": "float32", "text_encoder": "bfloat16"}


# ----------------------------------------------------------------------------------------- Wan VACE


@pytest.fixture(scope="module")
def tiny_vace(tiny_wan):
    return TinyWan(seed=0, vace=True).load()


def test_tiny_vace_is_wan_vace_with_wan_tiny_parts(tiny_vace, tiny_wan):
    transformer = tiny_vace.transformer
    assert type(transformer).__name__ == "WanVACETransformer3DModel" and tiny_vace.vace and not tiny_wan.vace
    assert transformer.config.vace_layers == [0, 1] and transformer.config.vace_in_channels == 96
    assert "vace_blocks.1.attn1.processor" in transformer.attn_processors
    # wan_tiny plus a control branch: the same VAE, text encoder and blocks, weight for weight
    for name in ("vae", "text_encoder", "transformer"):
        ours, t2v = getattr(tiny_vace, name).state_dict(), getattr(tiny_wan, name).state_dict()
        assert set(ours) - set(t2v) == (
            {k for k in ours if k.startswith("vace_")} if name == "transformer" else set()
        )
        assert set(t2v) <= set(ours) and all(torch.equal(ours[k], t2v[k]) for k in t2v), name
    assert tiny_vace.tokenizer("Spiderman").input_ids == tiny_wan.tokenizer("Spiderman").input_ids
    assert (
        tiny_vace.fingerprint.startswith("wan-vace-tiny-") and tiny_vace.fingerprint != tiny_wan.fingerprint
    )
    assert TinyWan(vace=True).describe()["model"] == "wan_vace_tiny"


def test_vace_save_and_load_round_trip(tiny_vace, tmp_path):
    _save(tiny_vace, tmp_path / "vace")
    spec = Wan21(str(tmp_path / "vace"), dtype="fp32", vace=True)
    loaded = spec.load()
    assert type(loaded.transformer).__name__ == "WanVACETransformer3DModel" and loaded.vace
    a, b = tiny_vace.transformer.state_dict(), loaded.transformer.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("vace_blocks.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert loaded.transformer.config.vace_layers == [0, 1]
    assert spec.accepts_control and not Wan21(str(tmp_path / "vace")).accepts_control


def test_the_transformer_kind_must_match_the_config(tiny_vace, tiny_wan, tmp_path):
    _save(tiny_wan, tmp_path / "t2v")
    _save(tiny_vace, tmp_path / "vace")
    with pytest.raises(
        ModelLoadError,
        match=r"holds a WanTransformer3DModel \(Wan 2.1 text-to-video, no control branch\), not a "
        r"WanVACETransformer3DModel: load it with model=wan21_t2v_1_3b .* or point "
        r"model.pretrained_model_name_or_path at a VACE model \(e.g. Wan-AI/Wan2.1-VACE-1.3B-diffusers\)",
    ):
        load_wan(str(tmp_path / "t2v"), vace=True)
    with pytest.raises(
        ModelLoadError,
        match=r"holds a WanVACETransformer3DModel \(Wan VACE, with a control branch\), not a "
        r"WanTransformer3DModel: load it with model=wan21_vace_1_3b",
    ):
        load_wan(str(tmp_path / "vace"))


def test_missing_vace_weights_fail_fast_naming_the_tiny_override(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        Wan21("Wan-AI/Wan2.1-VACE-1.3B-diffusers", vace=True).load()
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "Wan 2.1 VACE weights 'Wan-AI/Wan2.1-VACE-1.3B-diffusers'" in message
    assert "model=wan_vace_tiny" in message and "model=wan_tiny" not in message


def test_the_random_1_3b_model_refuses_vace():
    with pytest.raises(
        ConfigError, match=r"model.vace=true is not available for the 1.3B-shaped random model"
    ):
        RandomWan13B(vace=True)


def test_control_is_used_where_the_backbone_takes_it():
    from videoedit.backbones.stable_diffusion import TinyStableDiffusion
    from videoedit.methods.flowedit import FlowEditMethod
    from videoedit.methods.sample import SampleMethod

    flowedit, sample = FlowEditMethod(), SampleMethod()
    assert flowedit.uses_control(TinyWan(vace=True)) and flowedit.uses_control(Wan21(vace=True))
    assert not flowedit.uses_control(TinyWan()) and not flowedit.uses_control(Wan21())
    assert sample.uses_control(TinyWan(vace=True)) and not sample.uses_control(TinyWan())
    assert sample.uses_control(TinyStableDiffusion())
