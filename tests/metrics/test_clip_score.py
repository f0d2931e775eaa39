"""CLIP-T / CLIP-F with random-weight CLIP models built offline (open_clip and transformers), against the
direct formula; the "no weights" path."""

import numpy as np
import pytest
import torch

from videoedit.metrics.clip_score import (
    ClipUnavailable,
    OpenClipEncoder,
    TransformersClipEncoder,
    clip_scores,
    load_clip_encoder,
)
from videoedit.metrics.evaluate import Evaluator


@pytest.fixture(scope="module")
def open_clip_encoder():
    open_clip = pytest.importorskip("open_clip")
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    return OpenClipEncoder(
        model, open_clip.image_transform(32, is_train=False), open_clip.get_tokenizer("ViT-B-32"), name="tiny"
    )


@pytest.fixture(scope="module")
def transformers_encoder(tokenizer):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return TransformersClipEncoder(CLIPModel(config), processor, tokenizer, name="tiny-hf")


def _video(seed: int = 0, frames: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 40, 48, 3), dtype=np.uint8)


def _reference_open_clip(encoder: OpenClipEncoder, frames: np.ndarray, prompt: str) -> tuple[float, float]:
    from PIL import Image

    with torch.no_grad():
        pixels = torch.stack([encoder.preprocess(Image.fromarray(f)) for f in frames])
        img = encoder.model.encode_image(pixels)
        txt = encoder.model.encode_text(encoder.tokenizer([prompt]))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    clip_t = torch.stack([img[i] @ txt[0] for i in range(len(frames))]).mean()
    clip_f = torch.stack([img[i] @ img[i + 1] for i in range(len(frames) - 1)]).mean()
    return float(clip_t), float(clip_f)


@pytest.mark.parametrize("backend", ["open_clip_encoder", "transformers_encoder"])
def test_a_static_video_has_clip_f_one(backend, request):
    encoder = request.getfixturevalue(backend)
    frames = np.repeat(_video()[:1], 3, axis=0)
    scores = clip_scores(frames, "a cat", encoder)
    assert scores["clip_f"] == pytest.approx(1.0, abs=1e-5)
    assert scores["clip_t_per_frame"] == pytest.approx([scores["clip_t"]] * 3, abs=1e-5)


def test_open_clip_scores_match_the_direct_formula(open_clip_encoder):
    frames = _video()
    scores = clip_scores(frames, "two astronauts jogging", open_clip_encoder)
    clip_t, clip_f = _reference_open_clip(open_clip_encoder, frames, "two astronauts jogging")
    assert scores["clip_t"] == pytest.approx(clip_t, abs=1e-5)
    assert scores["clip_f"] == pytest.approx(clip_f, abs=1e-5)
    assert -1 <= scores["clip_t"] <= 1 and scores["clip_model"] == "tiny"


def test_transformers_scores_match_the_direct_formula(transformers_encoder):
    frames = _video(1)
    enc = transformers_encoder
    scores = clip_scores(frames, "a red car", enc)
    with torch.no_grad():
        pixels = enc.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        out = enc.model.get_image_features(pixel_values=pixels)
        img = out if torch.is_tensor(out) else out.pooler_output
        ids = enc.tokenizer(["a red car"], padding="max_length", max_length=77, return_tensors="pt")[
            "input_ids"
        ]
        out = enc.model.get_text_features(input_ids=ids)
        txt = out if torch.is_tensor(out) else out.pooler_output
    img = torch.nn.functional.normalize(img, dim=-1)
    txt = torch.nn.functional.normalize(txt, dim=-1)
    assert scores["clip_t"] == pytest.approx(float((img @ txt.T).mean()), abs=1e-5)
    assert scores["clip_f"] == pytest.approx(float((img[:-1] * img[1:]).sum(-1).mean()), abs=1e-5)
    # the prompt matters: another prompt gives another CLIP-T, the same CLIP-F
    other = clip_scores(frames, "a blue boat on a lake", enc)
    assert other["clip_t"] != pytest.approx(scores["clip_t"], abs=1e-6)
    assert other["clip_f"] == pytest.approx(scores["clip_f"], abs=1e-6)


def test_no_weights_is_a_clear_skip(tmp_path):
    with pytest.raises(ClipUnavailable, match="no CLIP weights found locally"):
        load_clip_encoder("auto", cache_dir=str(tmp_path))
    with pytest.raises(ClipUnavailable, match=r"no CLIP model configured \(metrics.clip_model=null\)"):
        load_clip_encoder(None)
    evaluator = Evaluator(clip_model="auto", hf_cache_dir=str(tmp_path), flow_cache_dir=None)
    frames = _video()
    quality = evaluator.evaluate(frames, {"e": frames}, [{"name": "e", "prompt": "x", "local_prompts": []}])
    assert quality["skipped"]["clip"].startswith("no CLIP weights found locally")
    assert quality["settings"]["clip_model"] is None
    assert (
        "clip_t" not in quality["edits"]["e"] and "warp_error" in quality["edits"]["e"]
    )  # the rest is scored


def test_the_evaluator_scores_with_a_given_encoder(open_clip_encoder):
    frames = _video(2)
    evaluator = Evaluator(clip_model=open_clip_encoder)
    quality = evaluator.evaluate(
        frames, {"e": frames}, [{"name": "e", "prompt": "a dog", "local_prompts": []}]
    )
    expected = clip_scores(frames, "a dog", open_clip_encoder)
    assert quality["edits"]["e"]["clip_t"] == pytest.approx(expected["clip_t"])
    assert quality["mean"]["clip_f"] == pytest.approx(expected["clip_f"])
    assert quality["settings"]["clip_model"] == "tiny"
