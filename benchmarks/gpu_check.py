"""GPU check: every method end to end at 512 px with random weights of the real model shapes, one command.

    python benchmarks/gpu_check.py --record      # on a CUDA machine: about 10 minutes, writes the results
    python benchmarks/gpu_check.py --smoke       # anywhere (CPU): the tiny models at 64 px, 2 steps

Each method runs through ``edit()`` (the real path: data, conditions, inversion, edit, metrics, the result
tree) on the generated two-figures clip with its OpenPose maps at 512x512. SD-1.5 methods use
``model=sd15_random`` (SD-1.5's exact shapes, seeded random weights: no download; the images are noise) in
fp16, the video DiT ``model=wan21_1_3b_random`` (the Wan 2.1 1.3B transformer's shapes; its VAE and text
encoder are the tiny ones) in bf16, Wan's own precision:

========================  ========  ===============================================================
method                    frames    what it checks
========================  ========  ===============================================================
videograin                16        full-frame span (official), PnP, FLATTEN: target <= 12 GB
tokenflow                 120       PnP + ControlNet, keyframe caches for 120 frames: target <= 24 GB
dualflow_streaming        64        frame after frame with K/V stores
dualflow_lockstep         16
ddim, consistent_ddim     16
keyframe_propagate        16        4 keyframes edited jointly, propagated, refined
sample                    16        plain sampling: the cost reference
wan_sample                33        Wan 2.1 1.3B transformer, plain sampling (9 latent frames)
wan_flowedit              33        FlowEdit on Wan
wan_flowedit_layout       33        FlowEdit with layout attention on Wan's DiT
========================  ========  ===============================================================

Steps are reduced so the whole check fits in 10 minutes (``--steps``, default 10; TokenFlow inverts on a
50-step grid instead of 500; FlowEdit runs the last 7 of 10): **memory is what this check measures**. Peak
memory does not depend on the number of steps as long as every kind of step runs at least once: with 10
steps VideoGrain modulates 3 steps and injects PnP features, TokenFlow injects PnP/attention in its first
steps, dual-flow updates its flows and bank. Time per method is reported for the reduced steps.

Per method: the peak CUDA memory torch allocated during the run (weights included), the peak reserved,
wall time, the run's own timings, and whether any watched boundary (the denoiser, ControlNet, text encoder,
VAE) produced a NaN or infinity (:class:`videoedit.analysis.dtype_probe.DtypeProbe`). Results go to
``benchmarks/runs/gpu_check.json`` (or ``--out``); ``--record`` writes ``benchmarks/results/gpu_check.json``
and the table of ``benchmarks/README.md`` (between its ``gpu_check`` markers). The exit code is 1 when a method
fails, produces non-finite values or misses its memory target. Adding a method is one line of ``CHECKS``.

The test suite runs ``--smoke`` (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import add_record_argument, result_path  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"
GIB = 2**30
#: what the model boundaries must keep finite (SD-1.5-shaped stack)
WATCHED = ("UNet2DConditionModel", "ControlNetModel", "CLIPTextModel", "Encoder", "Decoder")
WATCHED += ("WanTransformer3DModel", "UMT5EncoderModel", "WanEncoder3d", "WanDecoder3d")


@dataclass(frozen=True)
class Check:
    """One method of the check: its overrides (on top of the common ones), model, frames and memory target."""

    name: str
    overrides: tuple[str, ...]
    frames: int
    target_gib: float | None = None
    steps_keys: tuple[str, ...] = ("method.num_inference_steps",)
    model: str = "sd15_random"


#: per GPU model config: the model, dtype and frames of ``--smoke`` (dtype: fp16 for SD-1.5, whose CUDA default it
#: is; Wan's own default, bf16, its official precision)
MODELS = {
    "sd15_random": {"dtype": "fp16", "smoke_model": "tiny", "smoke_frames": 4},
    "wan21_1_3b_random": {"dtype": "bf16", "smoke_model": "wan_tiny", "smoke_frames": 5},
}
LOCAL = '["left astronaut and right astronaut before cherry trees","left astronaut","right astronaut","cherry trees"]'

CHECKS = [
    Check("videograin", ("+experiment=instance_edit", "data=two_figures", "method.flow_backend=dis"), 16, 12.0),
    Check("tokenflow", ("method=tokenflow", "method.inversion.num_inversion_steps={inversion_steps}"), 120, 24.0),
    Check("dualflow_streaming", ("+experiment=dualflow_two_figures", "method.mode=streaming", "method.flow_backend=dis"), 64),
    Check("dualflow_lockstep", ("+experiment=dualflow_two_figures", "method.flow_backend=dis"), 16),
    Check("ddim", ("method=ddim",), 16),
    Check("consistent_ddim", ("+experiment=consistent_two_figures",), 16),
    Check("keyframe_propagate", ("+experiment=keyframe_two_figures", "method.flow.backend=dis", "method.refine.num_inference_steps={steps}"), 16, steps_keys=("method.keyframe_method.num_inference_steps",)),
    Check("sample", ("method=sample",), 16),
    # the video DiT (Wan 2.1 1.3B transformer shapes; its tiny random VAE and text encoder): 4k+1 frames
    Check("wan_sample", ("method=sample", "controlnet=none"), 33, model="wan21_1_3b_random"),
    Check("wan_flowedit", ("+experiment=wan_flowedit_two_figures", "method.n_max={n_max}"), 33, model="wan21_1_3b_random"),
    Check("wan_flowedit_layout", ("method=flowedit_layout", "controlnet=none", "method.n_max={n_max}", f"prompts=[{LOCAL}]"), 33, model="wan21_1_3b_random"),
]  # fmt: skip


@dataclass
class Outcome:
    name: str
    frames: int
    size: int
    steps: int
    model: str = ""
    dtype: str = ""
    status: str = "ok"
    seconds: float = 0.0
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    cpu_peak_rss_gib: float | None = None
    target_gib: float | None = None
    within_target: bool | None = None
    nonfinite: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def overrides_for(check: Check, smoke: bool, steps: int, inversion_steps: int, out_root: Path) -> list[str]:
    """The ``compose`` overrides of one check."""
    size = 64 if smoke else 512
    model = MODELS[check.model]
    frames = model["smoke_frames"] if smoke else check.frames
    common = [
        f"model={model['smoke_model'] if smoke else check.model}",
        "data=two_figures",
        f"data.num_frames={frames}",
        f"data.height={size}",
        f"data.width={size}",
        "dtype=fp32" if smoke else f"dtype={model['dtype']}",
        "device=auto",
        "progress_bar=false",
        "metrics.clip_model=null",
        f"paths.output_root={out_root}",
    ]
    n_max = max(1, round(0.7 * steps))  # FlowEdit runs the last 70% of its steps (Wan port: 35 of 50)
    method = [o.format(steps=steps, inversion_steps=inversion_steps, n_max=n_max) for o in check.overrides]
    method += [f"{key}={steps}" for key in check.steps_keys]
    if check.name == "tokenflow":
        method += ["method.batch_size=2"] if smoke else []
    if check.name == "keyframe_propagate":
        method += (
            ["method.num_keyframes=2"] if smoke else ["method.num_keyframes=4", "method.refine.strength=0.2"]
        )
    if check.name == "consistent_ddim" and smoke:
        method += ["method.self_attention.tile_size=2"]
    return [*method, *common]


def run_check(check: Check, smoke: bool, steps: int, inversion_steps: int, work: Path) -> Outcome:
    """Run one method through ``edit()`` in this process and measure it."""
    from videoedit.analysis.dtype_probe import DtypeProbe
    from videoedit.config import compose_config
    from videoedit.edit import edit

    frames = MODELS[check.model]["smoke_frames"] if smoke else check.frames
    outcome = Outcome(check.name, frames, 64 if smoke else 512, steps, target_gib=check.target_gib)
    outcome.model = MODELS[check.model]["smoke_model"] if smoke else check.model
    outcome.dtype = "fp32" if smoke else MODELS[check.model]["dtype"]
    cfg = compose_config(overrides_for(check, smoke, steps, inversion_steps, work / "outputs"))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        with DtypeProbe(WATCHED) as probe:
            result = edit(cfg, work / check.name)
        outcome.nonfinite = probe.nonfinite()
        peak = result.metrics["peak_memory"]
        outcome.timings_s = {k: round(float(v), 2) for k, v in result.metrics["timings_s"].items()}
        if "cuda_max_allocated_bytes" in peak:
            outcome.peak_allocated_gib = round(peak["cuda_max_allocated_bytes"] / GIB, 2)
            outcome.peak_reserved_gib = round(peak["cuda_max_reserved_bytes"] / GIB, 2)
        outcome.cpu_peak_rss_gib = round(peak["cpu_max_rss_bytes"] / GIB, 2)
        if outcome.nonfinite:
            outcome.status = "non-finite"
    except Exception as err:  # one failing method must not hide the others
        outcome.status = "failed"
        outcome.error = f"{type(err).__name__}: {err}"[:2000]
        traceback.print_exc()
    outcome.seconds = round(time.perf_counter() - start, 1)
    if not smoke and check.target_gib is not None and outcome.peak_allocated_gib is not None:
        outcome.within_target = outcome.peak_allocated_gib <= check.target_gib
    return outcome


def markdown_table(outcomes: list[Outcome], machine: dict) -> str:
    """The results as a Markdown table (with the machine and the settings above it)."""
    lines = [
        f"Machine: {machine.get('cuda') or 'CPU'}; torch {machine['torch']}; "
        f"{'smoke (tiny models, CPU sizes, fp32)' if machine.get('smoke') else 'random weights of the real shapes, 512 px'}; "
        f"{outcomes[0].steps if outcomes else '?'} steps.",
        "",
        "| method | model, dtype | frames | status | peak allocated | peak reserved | target | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        alloc = "-" if o.peak_allocated_gib is None else f"{o.peak_allocated_gib:.2f} GiB"
        reserved = "-" if o.peak_reserved_gib is None else f"{o.peak_reserved_gib:.2f} GiB"
        if o.target_gib is None:
            target = "-"
        else:
            verdict = {True: " (met)", False: " (MISSED)", None: ""}[o.within_target]
            target = f"<= {o.target_gib:g} GiB{verdict}"
        status = o.status if not o.nonfinite else f"non-finite at {', '.join(o.nonfinite)}"
        lines.append(
            f"| {o.name} | {o.model}, {o.dtype} | {o.frames} x {o.size}² | {status} | {alloc} | {reserved} | {target} "
            f"| {o.seconds:.0f} s |"
        )
    return "\n".join(lines)


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the ``gpu_check`` markers of ``readme`` by ``table``."""
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers for the table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")


def machine_info(smoke: bool) -> dict:
    return {
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda_total_gib": round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
        if torch.cuda.is_available()
        else None,
        "smoke": smoke,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, 4 frames at 64 px, fp32: any machine"
    )
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 10; smoke 2)")
    parser.add_argument(
        "--inversion-steps", type=int, default=50, help="TokenFlow's inversion grid (official 500)"
    )
    parser.add_argument("--methods", nargs="*", default=None, help=f"subset of {[c.name for c in CHECKS]}")
    parser.add_argument(
        "--out", default=None, help="results JSON (default: gpu_check.json in benchmarks/runs)"
    )
    parser.add_argument("--work", default=None, help="folder for the result trees (default: temporary)")
    add_record_argument(parser)  # with --record, also the table of benchmarks/README.md
    parser.add_argument("--readme", default=str(README), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; use --smoke to run the check on the CPU", file=sys.stderr)
        return 2
    if args.record and args.smoke:
        print("gpu_check: --record writes GPU results; it does not go with --smoke", file=sys.stderr)
        return 2
    steps = args.steps or (2 if args.smoke else 10)
    inversion_steps = 10 if args.smoke else args.inversion_steps
    names = [c.name for c in CHECKS]
    unknown = sorted(set(args.methods or []) - set(names))
    if unknown:
        print(f"gpu_check: unknown method(s) {unknown}; choose from {names}", file=sys.stderr)
        return 2
    checks = [c for c in CHECKS if not args.methods or c.name in args.methods]
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.smoke)
    outcomes = []
    for check in checks:
        print(f"[gpu_check] {check.name} ...", flush=True)
        outcome = run_check(check, args.smoke, steps, inversion_steps, work)
        print(f"[gpu_check] {json.dumps(outcome.__dict__)}", flush=True)
        outcomes.append(outcome)
    report = {
        "machine": machine,
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "steps": steps,
        "tokenflow_inversion_steps": inversion_steps,
        "results": [o.__dict__ for o in outcomes],
    }
    out = result_path(RESULTS.name, args.record, args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(outcomes, machine)
    if args.record:
        update_readme(Path(args.readme), table)
    print(table)
    print(f"[gpu_check] results: {out}")
    bad = [o for o in outcomes if o.status != "ok" or o.within_target is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
