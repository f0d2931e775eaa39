"""``edit(cfg, output_dir)``: one run from a composed config to a finished result tree.

The order is chosen so that every mistake a user can make surfaces before expensive work:

1. cheap checks: the method, the prompts, the metrics settings, the data (frames, masks, regions), the
   ControlNet/annotator pair from the config (the annotator is built before the data is read when reading
   it does annotation work, e.g. ``data=video_sam`` building masks, and the maps cannot come from the data);
2. models (missing weights fail in seconds, naming the id and the ``model=tiny`` override), frame size,
   then the annotator (missing annotator weights fail in seconds too);
3. condition maps; inputs written to the result tree;
4. inversion (from the on-disk cache when an identical one exists);
5. edits (split across processes under ``accelerate launch``/``torchrun``; gathered on the main one);
6. results, ``metrics.json`` and, last, the ``COMPLETE`` marker.

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
from videoedit.conditions import ControlSpec, build_control, check_annotator
from videoedit.errors import ConfigError, VideoEditError
from videoedit.inversion.cache import InversionCache
from videoedit.io.result_tree import RunDirectory
from videoedit.io.transforms import tensor_to_frames
from videoedit.methods.base import EditMethod, EditRequest, parse_edit_requests
from videoedit.metrics.evaluate import Evaluator, evaluate_edits
from videoedit.metrics.run_facts import (
    StageTimer,
    git_revision,
    library_versions,
    peak_memory,
    reset_peak_memory,
)
from videoedit.models.components import Components
from videoedit.models.loading import resolve_dtype
from videoedit.sweeps import SingleProcess, finished_run, launch_rank

logger = logging.getLogger("videoedit")


@dataclass
class RunResult:
    """What :func:`edit` returns (on every process; ``edits`` is complete on the main one)."""

    output_dir: Path
    metrics: dict[str, Any]
    edits: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: bool = False  # the folder held a finished run of this config (resume; force=true redoes it)


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises our own errors unwrapped and names the config group."""
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
    is_main = dist.is_main_process
    logger.info(
        "run directory: %s (process %d of %d)", run.root.resolve(), dist.process_index, dist.num_processes
    )

    # 1. cheap checks ---------------------------------------------------------------------------
    method: EditMethod = build(cfg.method, "method")
    requests = parse_edit_requests(cfg.prompts, cfg.sample_seeds, cfg.get("negative_prompt", ""))
    evaluator = Evaluator.from_config(cfg.get("metrics"))
    evaluator.check()  # explicit raft without weights, a CLIP model that cannot be found: fail now
    control_spec = _control_spec(cfg)
    annotator: Annotator | None = None
    given = {str(k) for k, v in (cfg.data.get("conditions") or {}).items() if v}
    if control_spec.enabled and control_spec.condition_type not in given and _annotates_on_load(cfg.data):
        annotator = _build_annotator(cfg, control_spec)
    with timer("load_video"):
        source = build(cfg.data, "data").load()
    run.fps = source.fps
    logger.info(
        "source: %s, %d frames %dx%d, regions %s, prompt %r",
        source.name,
        source.num_frames,
        source.size[1],
        source.size[0],
        source.regions,
        source.prompt,
    )
    method.check_inputs(source, requests)
    needs_annotator = (
        annotator is None and control_spec.enabled and control_spec.condition_type not in source.conditions
    )
    if needs_annotator:
        _check_annotator_config(cfg, control_spec)  # present and of the right type, without building it

    # 2. models, then the annotator (both fail in seconds when their weights are missing) -------------
    device = _device(cfg, dist)
    dtype = resolve_dtype(str(cfg.get("dtype", "auto")), device)
    with timer("load_model"):
        components: Components = build(cfg.model, "model")
        components.to(device, dtype)
    pipe = method.build_pipeline(components)
    pipe.set_progress_bar_config(disable=not (is_main and cfg.get("progress_bar", True)), leave=False)
    pipe.check_frame_size(*source.size)
    method.check_schedule(pipe.scheduler)
    logger.info("model: %s on %s (%s)", components.info, device, dtype)
    if needs_annotator:
        annotator = _build_annotator(cfg, control_spec)

    # 3. conditions and inputs ---------------------------------------------------------------------
    with timer("conditions"):
        annotation_cache = (
            AnnotationCache(Path(cfg.paths.cache_root) / "annotations")
            if cfg.get("cache_annotations", True)
            else None
        )
        control, control_origin = build_control(
            source, control_spec, (lambda: annotator) if annotator else None, annotation_cache
        )
    logger.info("control: %s", control_origin)
    frames_u8 = source.frames_uint8()
    if is_main:
        with timer("write_inputs"):
            run.write_source(frames_u8)
            if control is not None:
                run.write_control(control)
            if source.masks is not None:
                run.write_masks(frames_u8, source.masks.numpy(), source.regions)

    # 4. inversion (the main process first: the others then read it from the cache) ---------------
    cache = (
        InversionCache(Path(cfg.paths.cache_root) / "inversion") if cfg.get("cache_inversion", True) else None
    )
    with timer("inversion"), dist.main_process_first():
        inversion = method.invert(
            pipe,
            source,
            control,
            control_spec.conditioning_scale,
            cache,
            components.fingerprint,
            seed=int(cfg.seed),
        )
    cache_status = (
        "off" if cache is None or not method.inversion.cache else ("hit" if inversion.cache_hit else "miss")
    )
    logger.info("inversion: cache %s (key %s)", cache_status, inversion.key)
    inversion_artifacts = method.inversion_artifacts(source, inversion, pipe) if is_main else None
    if inversion_artifacts is not None:
        with timer("write_inputs"):
            run.write_artifacts(
                inversion_artifacts.videos, inversion_artifacts.images, inversion_artifacts.arrays
            )

    # 5. edits, split across processes -------------------------------------------------------------
    produced = []
    for index, request in enumerate(requests):
        if index % dist.num_processes != dist.process_index:
            continue
        logger.info("edit %s: %r %s", request.name, request.prompt, list(request.local_prompts))
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        torch.manual_seed(request.seed)
        with timer(f"edit/{request.name}"):
            result = method.edit(
                pipe, source, inversion, request, control, control_spec.conditioning_scale, generator
            )
        produced.append(
            {
                "index": index,
                "frames": tensor_to_frames(result.frames),
                "artifacts": (result.videos, result.images, result.arrays),
                "info": result.info,
                "seconds": timer.seconds[f"edit/{request.name}"],
            }
        )
    if dist.num_processes > 1:
        produced = gather_object(produced)
    produced.sort(key=lambda p: p["index"])

    # 6. results -----------------------------------------------------------------------------------
    metrics = {
        "experiment": cfg.get("experiment_name"),
        "method": method.describe(),
        "model": {**components.info, "fingerprint": components.fingerprint},
        "control": control_origin,
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
        "inversion": {
            "cache": cache_status,
            "key": inversion.key,
            **(inversion_artifacts.info if inversion_artifacts else {}),
        },
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "processes": dist.num_processes,
    }
    edits: dict[str, np.ndarray] = {}
    if is_main:
        with timer("write_results"):
            listing = []
            for item in produced:
                request: EditRequest = requests[item["index"]]
                run.write_edit(request.name, item["frames"])
                run.write_artifacts(*item["artifacts"])
                edits[request.name] = item["frames"]
                listing.append(
                    {
                        "name": request.name,
                        "prompt": request.prompt,
                        "local_prompts": list(request.local_prompts),
                        "seed": request.seed,
                        "video": str(run.edit_video_path(request.name).relative_to(run.root)),
                        "seconds": round(item["seconds"], 3),
                        **item["info"],
                    }
                )
            run.write_edits_index(listing)
            run.write_comparison([frames_u8, *edits.values()], ["input", *edits.keys()])
        with timer("metrics"):  # quality metrics (videoedit/metrics/evaluate.py); never fail the run
            metrics["quality"] = evaluate_edits(
                evaluator, frames_u8, edits, listing, source.masks, source.regions, device
            )
        metrics["edits"] = listing
        metrics["timings_s"] = timer.summary()
        metrics["peak_memory"] = peak_memory()
        metrics["versions"] = library_versions()
        metrics["git"] = git_revision()
        run.write_metrics(metrics)
        run.mark_complete({"edits": len(listing)})
        logger.info("results written to %s", run.root.resolve())
    if dist.num_processes > 1:
        dist.wait_for_everyone()
    return RunResult(output_dir=run.root, metrics=metrics, edits=edits)
