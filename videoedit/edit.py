"""``edit(cfg, output_dir)``: one run from a composed config to a finished result tree.

The order is chosen so that every mistake a user can make surfaces before expensive work:

1. :func:`plan_run`, cheap checks: the method and the configured backbone (an unsupported pair stops here),
   the prompts, the metrics settings, the ControlNet/annotator pair, the data (frames, masks, regions), the
   clip's shape against the backbone's rule and the method's schedule against its scheduler (both from the
   config or the model's own small config files); the annotator is built before the data is read when
   reading it does annotation work (e.g. ``data=video_sam`` building masks);
2. :func:`load_models`: the backbone (missing weights fail in seconds, naming the id and the tiny
   override), the method's pipeline, then the annotator (missing annotator weights fail in seconds too);
3. :func:`prepare_inputs`: condition maps; inputs written to the result tree;
4. :func:`prepare_source`: the method's source preparation (a DDIM inversion from the on-disk cache when an
   identical one exists; the source latents for inversion-free methods), and its reconstruction check;
5. :func:`run_edits`: the edits (split across processes under ``accelerate launch``/``torchrun``);
6. :func:`write_results`: results, ``metrics.json`` and, last, the ``COMPLETE`` marker.

Only the main process writes. ``run.py`` is the Hydra entry point around this function; tests call it
directly with configs composed from ``configs/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from annotators.base import Annotator
from annotators.cache import AnnotationCache
from videoedit.backbones.base import Backbone, Components, check_supported
from videoedit.conditions import ControlSpec, build_control, check_annotator
from videoedit.config import model_configs_by_family
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError, VideoEditError
from videoedit.inversion.cache import InversionCache
from videoedit.io.result_tree import RunDirectory
from videoedit.io.transforms import tensor_to_frames
from videoedit.methods.base import EditMethod, EditRequest, EditResult, parse_edit_requests
from videoedit.metrics.evaluate import Evaluator, evaluate_edits
from videoedit.metrics.reconstruction import reconstruction_psnr
from videoedit.metrics.run_facts import (
    StageTimer,
    git_revision,
    library_versions,
    peak_memory,
    reset_peak_memory,
)
from videoedit.sweeps import SingleProcess, finished_run, launch_rank
from videoedit.validation import check_config, check_node

logger = logging.getLogger("videoedit")


@dataclass
class RunResult:
    """What :func:`edit` returns (on every process; ``edits`` is complete on the main one)."""

    output_dir: Path
    metrics: dict[str, Any]
    edits: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: bool = False  # the folder held a finished run of this config (resume; force=true redoes it)


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after checking the node against its target's signature and types
    (:func:`~videoedit.validation.check_node`: every bad value named by its full key); re-raises our own
    errors unwrapped and names the config group."""
    check_node(node, what)
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, VideoEditError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, VideoEditError):
            raise cause from None
        raise ConfigError(
            f"Could not build the {what} from its config ({what}._target_={node.get('_target_')}): {err}"
        ) from err


def _control_spec(cfg: DictConfig) -> ControlSpec:
    node = cfg.get("controlnet")
    if not node or not node.get("condition_type"):
        return ControlSpec(None)
    return ControlSpec(str(node.condition_type), float(node.get("conditioning_scale", 1.0)))


def _annotates_on_load(node: DictConfig) -> bool:
    """Whether reading the data does annotation work (class attribute ``annotates_on_load``, e.g.
    ``data=video_sam`` builds masks) while its condition maps come only from ``data.conditions`` (a
    :class:`VideoClip`): then the annotator is built, and can fail, before that work."""
    from videoedit.data.source import VideoClip

    try:
        target = get_class(str(node.get("_target_")))
    except Exception:  # the data config's own error comes from build()
        return False
    return (
        isinstance(target, type)
        and issubclass(target, VideoClip)
        and bool(getattr(target, "annotates_on_load", False))
    )


def _check_annotator_config(cfg: DictConfig, spec: ControlSpec) -> None:
    """Raise unless an annotator is configured and produces the ControlNet's condition type.

    Reads the type from the config (its ``condition_type`` key, or the class attribute of its target), so
    the check costs nothing and comes before the models are loaded.
    """
    node = cfg.get("annotator")
    if not node:
        raise ConfigError(
            f"The ControlNet needs '{spec.condition_type}' maps: configure an annotator "
            "(annotator=<name>) or give precomputed maps in data.conditions."
        )
    kind = node.get("condition_type")
    if kind is None:
        try:
            kind = getattr(get_class(str(node.get("_target_"))), "condition_type", None)
        except Exception:  # an unknown target is reported when the annotator is built
            kind = None
    check_annotator(spec, kind or None)


def _build_annotator(cfg: DictConfig, spec: ControlSpec) -> Annotator:
    """The configured annotator (checked against the ControlNet's condition type)."""
    _check_annotator_config(cfg, spec)
    annotator = build(cfg.annotator, "annotator")
    check_annotator(spec, annotator.condition_type)
    return annotator


def _device(cfg: DictConfig, state) -> torch.device:
    requested = str(cfg.get("device", "auto"))
    if requested == "auto":
        return state.device
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda was requested but CUDA is not available: use device=auto or device=cpu."
        )
    return device


class _RunLog:
    """Mirror the run's log records into ``run.log`` (unless Hydra's job log already writes there)."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.handler: logging.Handler | None = None

    def __enter__(self) -> _RunLog:
        root = logging.getLogger()
        if not any(getattr(h, "baseFilename", None) == str(self.path) for h in root.handlers):
            self.handler = logging.FileHandler(self.path, encoding="utf-8")
            self.handler.setFormatter(
                logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
            )
            root.addHandler(self.handler)
        for name in ("videoedit", "annotators"):
            logging.getLogger(name).setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()


def edit(cfg: DictConfig, output_dir: str | Path, alone: bool = False) -> RunResult:
    """Run the experiment described by ``cfg`` and write its result tree into ``output_dir``.

    Args:
        cfg: a config composed from ``configs/`` (``config.yaml`` + overrides).
        output_dir: the run directory (Hydra's ``runtime.output_dir`` under ``run.py``).
        alone: run in this process only, even under a multi-process launch (``sweep_split=jobs``:
            the other processes run other jobs of the sweep).

    Returns:
        :class:`RunResult` with the metrics and the edited frames (``(F, H, W, 3)`` uint8 by name).
        A folder that already holds a finished run of the same config is skipped unless ``force=true``
        (``videoedit/sweeps.py``).
    """
    check_config(cfg)  # top-level settings and the metrics block, before anything else
    writer = alone or launch_rank()[0] == 0  # the process that may rewrite a finished run's metrics
    if not cfg.get("force", False) and (finished := finished_run(cfg, output_dir, writer)) is not None:
        logger.info("skipping %s: it holds a finished run of this config (force=true to redo it)", output_dir)
        return RunResult(output_dir=Path(output_dir), metrics=finished, skipped=True)
    requested = str(cfg.get("device", "auto"))
    # accelerate sets up multi-process CPU runs (gloo) only when told the run is on the CPU
    dist = (
        SingleProcess()
        if alone
        else PartialState(cpu=requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()))
    )
    run = RunDirectory(output_dir)
    if dist.is_main_process:
        run.start()
        run.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    if dist.num_processes > 1:
        dist.wait_for_everyone()
    log_ctx = _RunLog(run.log_path) if dist.is_main_process else None
    if log_ctx:
        log_ctx.__enter__()
    try:
        return _edit(cfg, run, dist)
    finally:
        if log_ctx:
            log_ctx.__exit__(None, None, None)


def _edit(cfg: DictConfig, run: RunDirectory, dist) -> RunResult:
    timer = StageTimer()
    reset_peak_memory()
    logger.info(
        "run directory: %s (process %d of %d)", run.root.resolve(), dist.process_index, dist.num_processes
    )
    plan = plan_run(cfg, timer)
    run.fps = plan.source.fps
    models = load_models(cfg, plan, dist, timer)
    inputs = prepare_inputs(cfg, plan, models, run, dist.is_main_process, timer)
    prepared = prepare_source(cfg, plan, models, inputs, run, dist, timer)
    produced = run_edits(plan, models, inputs, prepared.data, dist, timer)
    metrics = run_facts(cfg, plan, models, inputs, prepared, dist.num_processes)
    edits: dict[str, np.ndarray] = {}
    if dist.is_main_process:
        edits = write_results(plan, models, inputs, prepared, produced, metrics, run, timer)
    if dist.num_processes > 1:
        dist.wait_for_everyone()
    return RunResult(output_dir=run.root, metrics=metrics, edits=edits)


# ------------------------------------------------------------------------------ 1. cheap checks


@dataclass
class RunPlan:
    """What the cheap checks produce: everything configured and validated, no model loaded yet."""

    method: EditMethod
    backbone: Backbone
    requests: list[EditRequest]
    evaluator: Evaluator
    control_spec: ControlSpec
    source: SourceVideo
    annotator: Annotator | None = None  # built early (data that annotates on load)
    needs_annotator: bool = False  # to be built after the models


def plan_run(cfg: DictConfig, timer: StageTimer) -> RunPlan:
    """Build and check everything that needs no model: see the module docstring, stage 1."""
    method: EditMethod = build(cfg.method, "method")
    backbone: Backbone = build(cfg.model, "model")
    check_supported(method, backbone, model_configs_by_family())
    requests = parse_edit_requests(cfg.prompts, cfg.sample_seeds, cfg.get("negative_prompt", ""))
    evaluator = Evaluator.from_config(cfg.get("metrics"))
    evaluator.check()  # explicit raft without weights, a CLIP model that cannot be found: fail now
    control_spec = _control_spec(cfg)
    if control_spec.enabled and not method.uses_control(backbone):
        logger.info(
            "method=%s on the '%s' backbone (%s) uses no condition maps: controlnet=%s is ignored%s",
            method.name,
            backbone.family,
            type(backbone).__name__,
            control_spec.condition_type,
            f" ({backbone.control_hint})" if backbone.control_hint and not backbone.accepts_control else "",
        )
        control_spec = ControlSpec(None)
    annotator: Annotator | None = None
    given = {str(k) for k, v in (cfg.data.get("conditions") or {}).items() if v}
    if control_spec.enabled and control_spec.condition_type not in given and _annotates_on_load(cfg.data):
        annotator = _build_annotator(cfg, control_spec)
    with timer("load_video"):
        source: SourceVideo = build(cfg.data, "data").load()
    logger.info(
        "source: %s, %d frames %dx%d, regions %s, prompt %r",
        source.name,
        source.num_frames,
        source.size[1],
        source.size[0],
        source.regions,
        source.prompt,
    )
    backbone.shape_rule().check(source.num_frames, *source.size, cfg.data)
    method.check_inputs(source, requests)
    method.check_schedule(backbone.scheduler())
    tokenizer = backbone.tokenizer()
    if tokenizer is not None:
        method.check_prompts(tokenizer, source, requests)
    needs_annotator = (
        annotator is None and control_spec.enabled and control_spec.condition_type not in source.conditions
    )
    if needs_annotator:
        _check_annotator_config(cfg, control_spec)  # present and of the right type, without building it
    return RunPlan(method, backbone, requests, evaluator, control_spec, source, annotator, needs_annotator)


# ------------------------------------------------------------------------------ 2. models


@dataclass
class LoadedModels:
    """The loaded backbone, the method's pipeline over it, where it runs, and the annotator."""

    components: Components
    pipe: Any
    device: torch.device
    dtype: torch.dtype
    annotator: Annotator | None


def load_models(cfg: DictConfig, plan: RunPlan, dist, timer: StageTimer) -> LoadedModels:
    """Load the backbone (fails in seconds without weights), build the method's pipeline, apply the
    backbone's acceleration switches, then build the annotator if the run needs one."""
    device = _device(cfg, dist)
    dtype = plan.backbone.resolve_dtype(str(cfg.get("dtype", "auto")), device)
    acceleration = plan.backbone.acceleration
    with timer("load_model"):
        components = plan.backbone.load()
        # under CPU offload the modules stay on the CPU until they run
        components.to("cpu" if acceleration.cpu_offload != "none" else device, dtype)
    pipe = plan.method.build_pipeline(components)
    acceleration.apply(pipe, components, device)
    pipe.set_progress_bar_config(
        disable=not (dist.is_main_process and cfg.get("progress_bar", True)), leave=False
    )
    components.shape_rule().check(plan.source.num_frames, *plan.source.size, cfg.data)
    plan.method.check_schedule(pipe.scheduler)
    logger.info("model: %s on %s (%s)", components.info, device, dtype)
    annotator = plan.annotator
    if plan.needs_annotator:
        annotator = _build_annotator(cfg, plan.control_spec)
    return LoadedModels(components, pipe, device, dtype, annotator)


# ------------------------------------------------------------------------------ 3. inputs


@dataclass
class RunInputs:
    """The source as uint8 frames and its condition maps (``None`` without a ControlNet)."""

    frames_u8: np.ndarray
    control: np.ndarray | None
    control_origin: str | None


def prepare_inputs(
    cfg: DictConfig, plan: RunPlan, models: LoadedModels, run: RunDirectory, is_main: bool, timer: StageTimer
) -> RunInputs:
    """Condition maps (from the data, the annotation cache or the annotator), and the inputs written to the
    result tree by the main process."""
    with timer("conditions"):
        annotation_cache = (
            AnnotationCache(Path(cfg.paths.cache_root) / "annotations")
            if cfg.get("cache_annotations", True)
            else None
        )
        annotator = models.annotator
        control, control_origin = build_control(
            plan.source, plan.control_spec, (lambda: annotator) if annotator else None, annotation_cache
        )
    logger.info("control: %s", control_origin)
    frames_u8 = plan.source.frames_uint8()
    if is_main:
        with timer("write_inputs"):
            run.write_source(frames_u8)
            if control is not None:
                run.write_control(control)
            if plan.source.masks is not None:
                run.write_masks(frames_u8, plan.source.masks.numpy(), plan.source.regions)
    return RunInputs(frames_u8, control, control_origin)


# ------------------------------------------------------------------------------ 4. the source


@dataclass
class PreparedSource:
    """What the method made of the source once per run, and the facts about it for ``metrics.json``."""

    data: Any
    info: dict[str, Any]
    reconstruction: dict[str, Any] | None = None


def prepare_source(
    cfg: DictConfig,
    plan: RunPlan,
    models: LoadedModels,
    inputs: RunInputs,
    run: RunDirectory,
    dist,
    timer: StageTimer,
) -> PreparedSource:
    """The method's source preparation (the main process first: the others then read it from the cache),
    its artifacts, and the reconstruction check (``metrics.reconstruction``, main process)."""
    cache = (
        InversionCache(Path(cfg.paths.cache_root) / "inversion") if cfg.get("cache_inversion", True) else None
    )
    method, source = plan.method, plan.source
    scale = plan.control_spec.conditioning_scale
    with timer("inversion"), dist.main_process_first():
        data = method.prepare(
            models.pipe,
            source,
            inputs.control,
            scale,
            cache,
            models.components.fingerprint,
            seed=int(cfg.seed),
        )
    info = dict(method.prepared_info(data))
    logger.info("inversion: cache %s (key %s)", info.get("cache", "none"), info.get("key"))
    prepared = PreparedSource(data=data, info=info)
    if not dist.is_main_process:
        return prepared
    artifacts = method.prepared_artifacts(source, data, models.pipe)
    with timer("write_inputs"):
        run.write_artifacts(artifacts.videos, artifacts.images, artifacts.arrays)
    info.update(artifacts.info)
    if (cfg.get("metrics") or {}).get("reconstruction", True):
        with timer("reconstruction"):
            rebuilt = method.reconstruct(models.pipe, source, data, inputs.control, scale)
        if rebuilt is not None:
            frames = tensor_to_frames(rebuilt.frames)
            reference = inputs.frames_u8 if rebuilt.reference is None else tensor_to_frames(rebuilt.reference)
            run.write_artifacts({"infer_samples/reconstruction.mp4": frames}, {}, {})
            prepared.reconstruction = {
                "psnr": round(reconstruction_psnr(reference, frames), 3),
                "definition": rebuilt.definition,
                "video": "infer_samples/reconstruction.mp4",
            }
            logger.info("reconstruction PSNR %.2f dB", prepared.reconstruction["psnr"])
    return prepared


# ------------------------------------------------------------------------------ 5. edits


@dataclass
class ProducedEdit:
    """One edit's output, as gathered on the main process."""

    index: int
    frames: np.ndarray  # (F, H, W, 3) uint8
    result: EditResult
    seconds: float


def run_edits(
    plan: RunPlan, models: LoadedModels, inputs: RunInputs, prepared: Any, dist, timer: StageTimer
) -> list[ProducedEdit]:
    """Every request of this process (request ``i`` runs on process ``i % N``), gathered and ordered."""
    produced = []
    for index, request in enumerate(plan.requests):
        if index % dist.num_processes != dist.process_index:
            continue
        logger.info("edit %s: %r %s", request.name, request.prompt, list(request.local_prompts))
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        torch.manual_seed(request.seed)
        with timer(f"edit/{request.name}"):
            result = plan.method.edit(
                models.pipe,
                plan.source,
                prepared,
                request,
                inputs.control,
                plan.control_spec.conditioning_scale,
                generator,
            )
        frames = tensor_to_frames(result.frames)
        result.frames = None  # gathered as uint8 only
        produced.append(ProducedEdit(index, frames, result, timer.seconds[f"edit/{request.name}"]))
    if dist.num_processes > 1:
        produced = gather_object(produced)
    return sorted(produced, key=lambda p: p.index)


# ------------------------------------------------------------------------------ 6. results


def run_facts(
    cfg: DictConfig,
    plan: RunPlan,
    models: LoadedModels,
    inputs: RunInputs,
    prepared: PreparedSource,
    processes: int,
) -> dict[str, Any]:
    """The run's settings and inputs for ``metrics.json`` (quality, timings and listings come later)."""
    source = plan.source
    return {
        "experiment": cfg.get("experiment_name"),
        "method": plan.method.describe(),
        "model": {
            **plan.backbone.describe(),
            **models.components.info,
            "fingerprint": models.components.fingerprint,
            "dtypes": models.components.dtypes(),
        },
        "control": inputs.control_origin,
        "video": {
            "name": source.name,
            "frames": source.num_frames,
            "height": source.size[0],
            "width": source.size[1],
            "fps": source.fps,
            "regions": source.regions,
            "source_prompt": source.prompt,
        },
        "seeds": {"seed": int(cfg.seed), "sample_seeds": [int(s) for s in cfg.sample_seeds]},
        "inversion": prepared.info,
        "device": str(models.device),
        "dtype": str(models.dtype).replace("torch.", ""),
        "processes": processes,
    }


def write_results(
    plan: RunPlan,
    models: LoadedModels,
    inputs: RunInputs,
    prepared: PreparedSource,
    produced: list[ProducedEdit],
    metrics: dict[str, Any],
    run: RunDirectory,
    timer: StageTimer,
) -> dict[str, np.ndarray]:
    """Write every edit, the comparison, the quality metrics and ``metrics.json``, then ``COMPLETE``."""
    edits: dict[str, np.ndarray] = {}
    listing = []
    with timer("write_results"):
        for item in produced:
            request = plan.requests[item.index]
            run.write_edit(request.name, item.frames)
            run.write_artifacts(item.result.videos, item.result.images, item.result.arrays)
            edits[request.name] = item.frames
            listing.append(
                {
                    "name": request.name,
                    "prompt": request.prompt,
                    "local_prompts": list(request.local_prompts),
                    "seed": request.seed,
                    "video": str(run.edit_video_path(request.name).relative_to(run.root)),
                    "seconds": round(item.seconds, 3),
                    **item.result.info,
                }
            )
        run.write_edits_index(listing)
        run.write_comparison(  # labelled "<name>: <shortened prompt>" (the input: its source prompt)
            [inputs.frames_u8, *edits.values()],
            ["input", *edits.keys()],
            prompts=[plan.source.prompt, *(entry["prompt"] for entry in listing)],
        )
    with timer("metrics"):  # quality metrics (videoedit/metrics/evaluate.py); never fail the run
        source = plan.source
        metrics["quality"] = evaluate_edits(
            plan.evaluator, inputs.frames_u8, edits, listing, source.masks, source.regions, models.device
        )
        if prepared.reconstruction is not None:
            metrics["quality"]["reconstruction"] = prepared.reconstruction
    metrics["edits"] = listing
    metrics["timings_s"] = timer.summary()
    metrics["peak_memory"] = peak_memory()
    metrics["versions"] = library_versions()
    metrics["git"] = git_revision()
    run.write_metrics(metrics)
    run.mark_complete({"edits": len(listing)})
    logger.info("results written to %s", run.root.resolve())
    return edits
