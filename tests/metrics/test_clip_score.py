"""CLIP-T, both frame consistencies and PickScore with tiny random CLIP models built from configs and saved in
transformers layout (never a hub id), each checked against a direct computation of the published formula."""

from pathlib import Path

import numpy as np
import pytest
import torch

from videoedit.metrics.clip_score import (
    ClipScorer,
    ClipUnavailable,
    check_model_spec,
    clip_scores,
    frame_consistency_tgve,
    frame_consistency_v2v,
    load_clip_scorer,
    pick_score,
)
from videoedit.metrics.evaluate import Evaluator


def _save_tiny_clip(folder: Path, tokenizer, seed: int, logit_scale: float | None = None) -> Path:
    """A random CLIPModel (32x32 images) + its image processor + the real CLIP tokenizer, in HF layout."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        ),
        vision_config=dict(
            hidden_size=24,  # != projection_dim: the pooled and projected features differ in size
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config)
    if logit_scale is not None:
        model.logit_scale.data.fill_(float(np.log(logit_scale)))
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, tokenizer) -> Path:
    return _save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), tokenizer, seed=0, logit_scale=100.0)


@pytest.fixture(scope="module")
def scorer(clip_folder) -> ClipScorer:
    return load_clip_scorer(str(clip_folder))


def _video(seed: int = 0, frames: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 40, 48, 3), dtype=np.uint8)


def _direct(scorer: ClipScorer, frames: np.ndarray, prompt: str) -> dict[str, float]:
    """The published formulas, written out: V2VBench clip_text_alignment / clip_consistency (one frame at a
    time), LOVEU-TGVE clip_score_frame (sklearn's cosine matrix, diagonal zeroed)."""
    from sklearn.metrics.pairwise import cosine_similarity
    from transformers import CLIPVisionModel

    model, processor, tokenizer = scorer.model, scorer.image_processor, scorer.tokenizer
    vision = CLIPVisionModel.from_pretrained(scorer.name).eval()  # V2VBench loads the vision tower alone
    with torch.no_grad():
        text = tokenizer([prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
        t = model.get_text_features(**text)
        t = t if torch.is_tensor(t) else t.pooler_output
        t = t / torch.norm(t, dim=-1, keepdim=True)
        clip_t, pooled, projected = [], [], []
        for frame in frames:
            pixels = processor(frame, return_tensors="pt").pixel_values
            e = model.get_image_features(pixel_values=pixels)
            e = e if torch.is_tensor(e) else e.pooler_output
            projected.append(e[0].numpy())
            e = e / torch.norm(e, dim=-1, keepdim=True)
            clip_t.append((model.logit_scale.exp() * (t @ e.T)).item())
            p = vision(pixel_values=pixels).pooler_output
            pooled.append(p / torch.norm(p, dim=-1, keepdim=True))
    v2v = [max(0, (pooled[i] @ pooled[i - 1].T).item()) for i in range(1, len(frames))]
    sims = cosine_similarity(np.stack(projected))
    np.fill_diagonal(sims, 0)
    return {
        "clip_t": float(np.mean(clip_t)),
        "frame_consistency_v2v": sum(v2v) / len(v2v),
        "frame_consistency_tgve": float(sims.sum() / (len(frames) * (len(frames) - 1))),
    }


def test_scores_match_the_published_formulas(scorer):
    frames = _video()
    scores = clip_scores(frames, "two astronauts jogging on the moon", scorer)
    expected = _direct(scorer, frames, "two astronauts jogging on the moon")
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-4), key
    assert scorer.logit_scale == pytest.approx(100.0, rel=1e-5)  # the OpenAI CLIP scale: x100 cosines
    assert len(scores["clip_t_per_frame"]) == 4 and np.mean(scores["clip_t_per_frame"]) == pytest.approx(
        scores["clip_t"]
    )
    # the prompt matters for CLIP-T only
    other = clip_scores(frames, "a blue boat on a lake", scorer)
    assert other["clip_t"] != pytest.approx(scores["clip_t"], abs=1e-3)
    assert other["frame_consistency_tgve"] == pytest.approx(scores["frame_consistency_tgve"], abs=1e-6)


def test_a_static_clip_is_perfectly_consistent(scorer):
    frames = np.repeat(_video()[:1], 3, axis=0)
    scores = clip_scores(frames, "a cat", scorer)
    assert scores["frame_consistency_v2v"] == pytest.approx(1.0, abs=1e-5)
    assert scores["frame_consistency_tgve"] == pytest.approx(1.0, abs=1e-5)
    assert scores["clip_t_per_frame"] == pytest.approx([scores["clip_t"]] * 3, abs=1e-4)


def test_the_two_consistencies_differ_by_definition():
    # unit vectors: e0 . e1 = -0.6 (clamped to 0 by V2VBench), e1 . e2 = 0.8, e0 . e2 = 0
    e = torch.tensor([[1.0, 0.0, 0.0], [-0.6, 0.8, 0.0], [0.0, 1.0, 0.0]])
    e = torch.nn.functional.normalize(e, dim=-1)
    assert frame_consistency_v2v(e) == pytest.approx((0.0 + 0.8) / 2)
    assert frame_consistency_tgve(e) == pytest.approx(2 * (-0.6 + 0.8 + 0.0) / 6)
    assert np.isnan(frame_consistency_v2v(e[:1])) and np.isnan(frame_consistency_tgve(e[:1]))


def test_pick_score_uses_its_own_model_processor_and_logit_scale(tmp_path, tokenizer, clip_folder):
    model_dir = tmp_path / "pick_model"
    _save_tiny_clip(model_dir, tokenizer, seed=1, logit_scale=50.0)
    for name in ("preprocessor_config.json",):  # the model folder alone has no processor (as PickScore_v1)
        (model_dir / name).unlink()
    with pytest.raises(ClipUnavailable, match="could not load"):
        load_clip_scorer(str(model_dir), "pickscore_model")
    pick = load_clip_scorer(str(model_dir), "pickscore_model", processor=str(clip_folder))
    frames = _video(2)
    score = pick_score(frames, "a red car", pick)
    with torch.no_grad():
        pixels = pick.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        img = pick.model.get_image_features(pixel_values=pixels)
        img = img if torch.is_tensor(img) else img.pooler_output
        ids = pick.tokenizer(["a red car"], return_tensors="pt")
        txt = pick.model.get_text_features(**ids)
        txt = txt if torch.is_tensor(txt) else txt.pooler_output
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    expected = 50.0 * (txt @ img.T)[0]
    assert score["pick_score"] == pytest.approx(float(expected.mean()), abs=1e-4)
    assert score["pick_score_per_frame"] == pytest.approx(expected.tolist(), abs=1e-4)


def test_a_model_that_cannot_load_says_why(tmp_path):
    assert check_model_spec(None, "clip_model") == "not configured (metrics.clip_model=null)"
    reason = check_model_spec("openai/clip-vit-large-patch14", "clip_model", cache_dir=str(tmp_path))
    assert reason.startswith("openai/clip-vit-large-patch14 is not in the local Hugging Face cache")
    assert "hf download openai/clip-vit-large-patch14" in reason and "metrics.allow_download=true" in reason
    assert check_model_spec(str(tmp_path / "nowhere" / "x"), "clip_model") == (
        f"no model folder at {tmp_path / 'nowhere' / 'x'} (metrics.clip_model)"
    )
    (tmp_path / "empty").mkdir()
    assert check_model_spec(str(tmp_path / "empty"), "pickscore_model") == (
        f"the model folder {tmp_path / 'empty'} has no config.json, model.safetensors or pytorch_model.bin"
    )
    with pytest.raises(ClipUnavailable, match="is not in the local Hugging Face cache"):
        load_clip_scorer("openai/clip-vit-large-patch14", cache_dir=str(tmp_path))


def test_the_evaluator_records_models_and_definitions(clip_folder, scorer):
    frames = _video(3, frames=3)
    evaluator = Evaluator(
        clip_model=str(clip_folder), pickscore_model=scorer, lpips_net=None, flow_cache_dir=None
    )
    quality = evaluator.evaluate(
        frames, {"e": frames}, [{"name": "e", "prompt": "a dog", "local_prompts": []}]
    )
    expected = clip_scores(frames, "a dog", scorer)
    assert quality["edits"]["e"]["clip_t"] == pytest.approx(expected["clip_t"], abs=1e-5)
    assert quality["mean"]["frame_consistency_v2v"] == pytest.approx(
        expected["frame_consistency_v2v"], abs=1e-6
    )
    assert quality["edits"]["e"]["pick_score"] == pytest.approx(expected["clip_t"], abs=1e-5)  # same model
    record = quality["metrics"]["clip_t"]
    assert record["model"] == str(clip_folder) and record["backend"] == "transformers CLIPModel"
    assert (
        record["logit_scale"] == pytest.approx(100.0, rel=1e-5) and record["direction"] == "higher is better"
    )
    assert "V2VBench" in record["source"] and "logit_scale.exp()" in record["definition"]
    assert quality["settings"]["clip_model"] == str(clip_folder)
    assert quality["metrics"]["lpips_preserved"]["unavailable"] == "not configured (metrics.lpips_net=null)"


def test_an_unavailable_model_is_recorded_not_raised(tmp_path):
    evaluator = Evaluator(hf_cache_dir=str(tmp_path), lpips_net=None, flow_backend="dis", flow_cache_dir=None)
    evaluator.check()  # a hub id that is not cached is not a config error
    frames = _video()
    quality = evaluator.evaluate(frames, {"e": frames}, [{"name": "e", "prompt": "x", "local_prompts": []}])
    for key in ("clip_t", "frame_consistency_v2v", "frame_consistency_tgve"):
        assert quality["metrics"][key]["unavailable"].startswith(
            "openai/clip-vit-large-patch14 is not in the local Hugging Face cache"
        )
        assert quality["skipped"][key] == quality["metrics"][key]["unavailable"]
    assert quality["metrics"]["pick_score"]["unavailable"].startswith("yuvalkirstain/PickScore_v1 is not in")
    assert quality["settings"]["clip_model"] is None and quality["settings"]["pickscore_model"] is None
    assert (
        "clip_t" not in quality["edits"]["e"] and "warp_error" in quality["edits"]["e"]
    )  # the rest is scored
    assert quality["metrics"]["warp_error"]["backend"]["backend"] == "dis"
