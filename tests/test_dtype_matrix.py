"""Every method end to end in fp32, fp16 and bf16 on the CPU with the tiny models (4 frames, 64x64, 2 steps):
finite outputs at every watched boundary, the dtypes the docs promise there, and a complete result tree.

A case is one line of ``CASES``: a method on a model with its overrides and the method's own boundaries.
By default every case runs in fp32 and in the half dtypes not listed in its ``full_only``; the rest of the
matrix (same tests) runs with

    VIDEOEDIT_FULL_MATRIX=1 bash test.sh tests/test_dtype_matrix.py

Promises checked (CPU):
* SD family: the models (UNet, ControlNet, text encoder, VAE encoder/decoder) run in the run's dtype
  (``dtype=``, README "Real weights"), inputs and outputs; decoded frames are float32;
* Wan family: transformer and text encoder in the run's dtype, the VAE always in fp32
  (``configs/model/wan21_t2v_1_3b.yaml``), velocities and decoded frames in fp32;
* VideoGrain's ST-Layout scores and softmax are float32 for half inputs on the CPU (``st_layout.py``), its
  attention outputs come back in the run's dtype; FLATTEN too; the same for the layout attention on Wan's DiT;
* dual-flow's window attention and its fused SDPA call return the queries' dtype (so does the global form's
  additive bias: SDPA needs it so);
* ``metrics.json`` is strict JSON without NaN/Infinity and names the run's dtype.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import torch

from videoedit.analysis.dtype_probe import DtypeProbe
from videoedit.edit import edit

RUN = "run"  # the run's dtype
F32 = torch.float32
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Boundary:
    """A place whose dtypes are promised: a module class name or ``"package.module:attribute"``.

    ``input``/``output``: the expected dtype of the first floating argument / of every floating output
    (``RUN`` = the run's dtype, ``None`` = not checked). ``required``: it must be called in every run.
    ``finite``: its outputs must be finite (an additive attention mask holds ``-inf`` by design).
    """

    target: str
    input: str | torch.dtype | None = None
    output: str | torch.dtype | None = RUN
    required: bool = True
    finite: bool = True


#: what every run of an SD-shaped model promises: every module in the run's dtype, decoded frames in fp32
SD_BOUNDARIES = (
    Boundary("UNet2DConditionModel", RUN, RUN),
    Boundary("ControlNetModel", RUN, RUN, required=False),
    Boundary("CLIPTextModel", None, RUN),
    Boundary("Encoder", RUN, RUN, required=False),  # plain sampling encodes nothing
    Boundary("Decoder", RUN, RUN),
    Boundary("videoedit.pipelines.pipeline_video_edit:VideoEditPipeline.decode_latents", None, F32),
)


#: Wan 2.1 (configs/model/wan21_t2v_1_3b.yaml): the transformer and text encoder in the run's dtype, the VAE
#: always in fp32, velocities and decoded frames in fp32
def wan_boundaries(transformer: str = "WanTransformer3DModel") -> tuple[Boundary, ...]:
    return (
        Boundary(transformer, RUN, RUN),
        Boundary("UMT5EncoderModel", None, RUN),
        Boundary("WanEncoder3d", F32, F32, required=False),
        Boundary("WanDecoder3d", F32, F32),
        Boundary("videoedit.pipelines.pipeline_wan:WanVideoEditPipeline.velocity", None, F32),
        Boundary("videoedit.pipelines.pipeline_wan:WanVideoEditPipeline.decode_latents", None, F32),
    )


@dataclass(frozen=True)
class Model:
    """A model config of the matrix: its boundaries and the clip it takes (frames; 64x64 for all)."""

    boundaries: tuple[Boundary, ...]
    frames: int


#: per model config (``model=<name>``)
MODELS = {
    "tiny": Model(SD_BOUNDARIES, 4),
    "wan_tiny": Model(wan_boundaries(), 5),  # Wan: 4k+1 frames
    "wan_vace_tiny": Model(wan_boundaries("WanVACETransformer3DModel"), 5),
}

VIDEOGRAIN = (
    Boundary("videoedit.attention.st_layout:modulate_logits", F32, F32),  # fp32 scores + softmax on the CPU
    Boundary("videoedit.attention.videograin:full_frame_attention", RUN, RUN),
    Boundary("videoedit.attention.videograin:cross_attention", RUN, RUN),
    Boundary("videoedit.attention.videograin:trajectory_attention", RUN, RUN),  # FLATTEN
)
DUALFLOW = (
    # the default prev_reuse=window: its attention and the fused SDPA call (group biases on extra channels)
    Boundary("videoedit.attention.dualflow:window_reuse_attention", RUN, RUN),
    Boundary("videoedit.attention.dualflow:grouped_attention", RUN, RUN),
    # prev_reuse=global only (-inf: empty slots)
    Boundary("videoedit.attention.dualflow:dualflow_bias", None, RUN, required=False, finite=False),
)
WAN_LAYOUT = (
    Boundary("videoedit.attention.st_layout:modulate_logits", F32, F32),
    Boundary("videoedit.attention.wan_layout:full_frame_attention", RUN, RUN),
    Boundary("videoedit.attention.wan_layout:modulated_cross_attention", RUN, RUN),
)

#: the clip of every case: the generated two-figures clip at 64x64 (frames: the model's), no CLIP scores
TINY = (
    "data=two_figures",
    "data.height=64",
    "data.width=64",
    "progress_bar=false",
    "metrics.clip_model=null",
)
STEPS2 = ("method.num_inference_steps=2",)
LOCAL = (
    'prompts=[["left astronaut and right astronaut before cherry trees","left astronaut","right astronaut","cherry trees"]]',
)


@dataclass(frozen=True)
class Case:
    """One (method, model) pair of the matrix."""

    name: str
    model: str
    overrides: tuple[str, ...]
    boundaries: tuple[Boundary, ...] = ()
    full_only: tuple[str, ...] = ()  # dtypes that run only in the full matrix


CASES = [
    Case("ddim", "tiny", ("method=ddim", *STEPS2), full_only=("fp16", "bf16")),
    Case("videograin", "tiny", ("+experiment=instance_edit", *STEPS2, "method.inject_step=1", "method.flow_backend=dis"), VIDEOGRAIN),
    Case("tokenflow", "tiny", ("method=tokenflow", *STEPS2, "method.batch_size=2", "method.inversion.num_inversion_steps=10"), full_only=("fp16", "bf16")),
    Case("dualflow_lockstep", "tiny", ("+experiment=dualflow_two_figures", *STEPS2, "method.flow_backend=dis"), DUALFLOW, full_only=("fp16",)),
    Case("dualflow_streaming", "tiny", ("+experiment=dualflow_two_figures", *STEPS2, "method.mode=streaming", "method.flow_backend=dis"), DUALFLOW, full_only=("fp16", "bf16")),
    Case("consistent_ddim", "tiny", ("+experiment=consistent_two_figures", *STEPS2, "method.self_attention.tile_size=2"), full_only=("fp16", "bf16")),
    Case("keyframe_propagate", "tiny", ("+experiment=keyframe_two_figures", "method.num_keyframes=2", "method.keyframe_method.num_inference_steps=2", "method.refine.strength=0.5", "method.refine.num_inference_steps=2", "method.flow.backend=dis"), full_only=("bf16",)),
    Case("sample", "tiny", ("method=sample", *STEPS2), full_only=("fp16", "bf16")),
    Case("sample", "wan_tiny", ("method=sample", "controlnet=none", *STEPS2), full_only=("fp16",)),
    Case("flowedit", "wan_tiny", ("+experiment=wan_flowedit_two_figures", *STEPS2, "method.n_max=2"), full_only=("fp16",)),
    Case("flowedit_pose", "wan_vace_tiny", ("+experiment=wan_flowedit_pose", *STEPS2, "method.n_max=2"), full_only=("fp16",)),
    Case("flowedit_layout", "wan_tiny", ("method=flowedit_layout", "controlnet=none", *STEPS2, "method.n_max=2", *LOCAL), WAN_LAYOUT, full_only=("fp16",)),
]  # fmt: skip


def _params():
    for case in CASES:
        for dtype in DTYPES:
            marks = [pytest.mark.full_matrix] if dtype in case.full_only else []
            yield pytest.param(case, dtype, marks=marks, id=f"{case.name}-{case.model}-{dtype}")


def _expected(value: str | torch.dtype | None, run: torch.dtype) -> torch.dtype | None:
    return run if value == RUN else value


def _strict_json(text: str) -> dict:
    def reject(constant: str) -> float:
        raise AssertionError(f"metrics.json holds {constant}: not valid JSON")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize(("case", "dtype"), list(_params()))
def test_dtype_matrix(case: Case, dtype: str, compose, tmp_path, monkeypatch):
    tokenizers = os.environ["VIDEOEDIT_CACHE_ROOT"] + "/tokenizer"  # the session's: built once
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))  # every inversion computed here
    run = DTYPES[dtype]
    model = MODELS[case.model]
    cfg = compose(
        *case.overrides,
        f"model={case.model}",
        f"model.tokenizer_cache_dir={tokenizers}",
        *TINY,
        f"data.num_frames={model.frames}",
        f"dtype={dtype}",
    )
    boundaries = (*model.boundaries, *case.boundaries)
    modules = [b.target for b in boundaries if ":" not in b.target]
    functions = [b.target for b in boundaries if ":" in b.target]
    with DtypeProbe(modules, functions) as probe:
        result = edit(cfg, tmp_path / "run")

    nonfinite = {
        k: n for k, n in probe.nonfinite().items() if k not in {b.target for b in boundaries if not b.finite}
    }
    assert nonfinite == {}, f"non-finite outputs at {nonfinite}"
    for b in boundaries:
        record = probe.records.get(b.target)
        if record is None:
            assert not b.required, f"{b.target} was never called"
            continue
        if b.input is not None:
            assert record.inputs == {_expected(b.input, run)}, (b.target, "input", record.inputs)
        if b.output is not None:
            assert record.outputs == {_expected(b.output, run)}, (b.target, "output", record.outputs)

    root = tmp_path / "run"
    for rel in (
        "COMPLETE",
        "config.yaml",
        "run.log",
        "source_video.mp4",
        "sample/edit0_seed0.mp4",
        "sample/edit0_seed0/00000.png",
        f"sample/edit0_seed0/{model.frames - 1:05d}.png",
        "sample/comparison.mp4",
        "sample/edits.json",
    ):
        assert (root / rel).is_file(), rel
    metrics = _strict_json((root / "metrics.json").read_text())
    assert metrics["dtype"] == str(run).removeprefix("torch.")
    frames = result.edits["edit0_seed0"]
    assert frames.shape == (model.frames, 64, 64, 3) and frames.dtype.name == "uint8"
    assert metrics["quality"]  # the metrics ran on the edit
