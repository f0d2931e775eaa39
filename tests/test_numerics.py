"""Non-finite numbers stop a run at their step with a useful message; JSON output stays valid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import FAST
from videoedit.attention.state import StepState
from videoedit.errors import NumericalError, VideoEditError
from videoedit.inversion.ddim import ddim_invert
from videoedit.io.atomic import write_json
from videoedit.io.result_tree import RunDirectory
from videoedit.io.transforms import tensor_to_frames
from videoedit.numerics import check_finite, json_safe


def _strict_json(text: str):
    """``json.loads`` that refuses the ``NaN``/``Infinity`` tokens Python writes but JSON does not have."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_finite_tensors_pass_through_unchanged():
    x = torch.randn(2, 4, 8, 8)
    assert check_finite(x, "latents") is x
    assert issubclass(NumericalError, VideoEditError)  # run.py prints it without a traceback


def test_the_message_names_tensor_step_timestep_and_what_to_try():
    x = torch.zeros(2, 4, 8, 8, dtype=torch.float16)
    x[0, 0, 0, :3] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    state = StepState(phase="sample", step_index=6, timestep=861, num_steps=50)
    with pytest.raises(NumericalError) as err:
        check_finite(x, "noise prediction", state=state)
    assert str(err.value) == (
        "The noise prediction became non-finite at sampling step 7/50 (t=861): 3 NaN and 1 infinite of 512 "
        "values (float16, shape (2, 4, 8, 8)). The run stops here (nothing is marked complete). Try: float16 "
        "overflows first: run in full precision (dtype=fp32), or lower method.guidance_scale."
    )
    # in full precision the advice is the guidance scale and the inputs; explicit arguments win over state
    with pytest.raises(NumericalError, match=r"at inversion step 2 \(t=21\): 1 NaN and 0 infinite") as err:
        check_finite(torch.tensor([1.0, float("nan")]), "latents", phase="invert", step=1, timestep=21)
    assert "lower method.guidance_scale" in str(err.value) and "dtype=fp32" not in str(err.value)
    with pytest.raises(NumericalError, match=r"^The decoded frames became non-finite: 0 NaN and 1 infinite"):
        check_finite(torch.tensor([float("-inf")]), "decoded frames")


def test_inversion_stops_at_the_step_whose_latents_diverge():
    calls = []

    def predict(x, t):
        calls.append(t)
        return torch.full_like(x, float("nan")) if len(calls) == 3 else torch.zeros_like(x)

    alphas = torch.linspace(0.999, 0.01, 1000)
    with pytest.raises(
        NumericalError, match=r"inverted latents became non-finite at inversion step 3/4 \(t=61\)"
    ):
        ddim_invert(predict, torch.zeros(2, 4, 4, 4), [1, 21, 41, 61, 81], alphas, 1.0)
    assert calls == [1, 21, 41]  # no step after the diverged one


def test_nan_frames_are_refused_instead_of_becoming_black():
    frames = torch.zeros(2, 3, 4, 4)
    assert tensor_to_frames(frames).shape == (2, 4, 4, 3)
    frames[1, 2, 3, 3] = float("nan")
    with pytest.raises(NumericalError, match=r"decoded frames became non-finite: 1 NaN"):
        tensor_to_frames(frames)


def test_json_safe_and_valid_metrics_json(tmp_path):
    data = {
        "a": float("nan"),
        "quality": {"mean": {"warp_error": np.float32("inf"), "psnr": 30.5}},
        "edits": [{"seconds": torch.tensor(float("-inf"))}, {"seconds": 2}],
        "arr": np.array([1.0, np.nan]),
        "ok": "NaN",  # a string stays a string
    }
    clean, found = json_safe(data)
    assert found == ["a", "quality.mean.warp_error", "edits[0].seconds", "arr[1]"]
    assert clean == {
        "a": None,
        "quality": {"mean": {"warp_error": None, "psnr": 30.5}},
        "edits": [{"seconds": None}, {"seconds": 2}],
        "arr": [1.0, None],
        "ok": "NaN",
    }
    assert _strict_json(write_json(tmp_path / "x.json", data).read_text()) == clean
    run = RunDirectory(tmp_path / "run")
    metrics = _strict_json(
        run.write_metrics({"quality": {"warp_error": math.nan}, "seconds": 1.0}).read_text()
    )
    assert metrics == {"quality": {"warp_error": None}, "seconds": 1.0, "non_finite": ["quality.warp_error"]}


def test_a_run_that_diverges_stops_there_and_is_never_complete(compose, tmp_path, monkeypatch):
    from videoedit.edit import edit
    from videoedit.pipelines.pipeline_video_edit import VideoEditPipeline

    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    real, calls = VideoEditPipeline.predict_noise, []

    def diverging(self, latents, *args, **kwargs):  # the second inversion step's UNet output blows up
        calls.append(1)
        eps = real(self, latents, *args, **kwargs)
        return eps * float("inf") if len(calls) == 2 else eps

    monkeypatch.setattr(VideoEditPipeline, "predict_noise", diverging)
    root = tmp_path / "run"
    # the noise prediction is checked as it leaves the UNet, before it reaches the inverted latents
    with pytest.raises(NumericalError, match=r"noise prediction became non-finite at inversion step 2/2"):
        edit(compose(*FAST), root)
    assert len(calls) == 2
    assert not RunDirectory.is_complete(root) and not (root / "metrics.json").exists()
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # nothing diverged was cached
