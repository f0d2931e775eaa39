"""All quality metrics of a run: during :func:`videoedit.edit.edit` (from arrays) or on a finished
result tree on disk (``videoedit metrics <run_dir>``). They go into ``metrics.json`` under ``"quality"``.

Per edit (``quality.edits.<edit name>``), each by its published definition
(:mod:`videoedit.metrics.definitions`, ``docs/metrics.md``):

* text: ``clip_t`` (x100), ``pick_score`` (``clip_score.py``), when their weights can be found;
* temporal: ``frame_consistency_v2v``, ``frame_consistency_tgve`` (CLIP), ``warp_error``, ``warp_mse``
  and ``motion_alignment`` along optical flow (``temporal.py``; RAFT-large when its weights are present,
  DIS otherwise);
* preservation: ``psnr_preserved``, ``ssim_preserved``, ``lpips_preserved`` outside the edited regions
  (``preservation.py``).

``quality.metrics.<key>`` records, for every metric, its definition, source, unit, direction and the
model / backend used, or ``unavailable`` with the reason (also logged). ``quality.source`` holds the warp
error of the source itself (the flow's floor), ``quality.mean`` the mean of every metric over the edits,
``quality.skipped``/``quality.errors`` why a metric is missing. A metric that cannot be computed never
fails the run: it records why.

Run facts (timings per stage, peak memory, frames, resolution) are written by ``edit()`` itself
(``timings_s``, ``peak_memory``, ``video``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from videoedit.errors import ConfigError, InputError
from videoedit.io.masks import read_masks
from videoedit.io.result_tree import RunDirectory
from videoedit.io.video import read_video
from videoedit.metrics.clip_score import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_PICKSCORE_MODEL,
    DEFAULT_PICKSCORE_PROCESSOR,
    ClipScorer,
    ClipUnavailable,
    check_model_spec,
    clip_scores,
    is_off,
    load_clip_scorer,
    pick_score,
)
from videoedit.metrics.definitions import DEFINITIONS_VERSION, EDIT_METRICS, METRICS
from videoedit.metrics.preservation import LPIPS, LPIPS_NETS, PROTOCOLS, lpips_backbone_path, preservation
from videoedit.metrics.temporal import SourceFlows, motion_alignment, source_flows, warp_error
from videoedit.motion import FlowCache, FlowEstimator, build_flow_estimator, raft_weights_path

logger = logging.getLogger(__name__)

FLOW_BACKENDS = ("dis", "raft", "auto")

# scalar metrics averaged over a run's edits (quality.mean) and shown by the report
SCALAR_METRICS = EDIT_METRICS
_CLIP_KEYS = ("clip_t", "frame_consistency_v2v", "frame_consistency_tgve")
_FLOW_KEYS = ("warp_error", "warp_mse", "motion_alignment")
_KEPT_KEYS = ("psnr_preserved", "ssim_preserved", "lpips_preserved")


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf floats become ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class Evaluator:
    """Computes the quality metrics of a run (the ``metrics`` config block: keys = these arguments).

    Args:
        enabled: compute the metrics at the end of every run.
        clip_model: CLIP for ``clip_t`` and the frame consistencies: a hub id (default
            ``openai/clip-vit-large-patch14``, the V2VBench/TGVE model), a local folder in transformers
            layout, ``null`` (none), or (in code) a :class:`ClipScorer`.
        pickscore_model: the PickScore model (hub id or folder; ``null``: no PickScore), or a :class:`ClipScorer`.
        pickscore_processor: where PickScore's image processor and tokenizer are (hub id or folder).
        allow_download: fetch hub ids that are not in the local Hugging Face cache (default: never
            download; a missing model is recorded as unavailable with the ``hf download`` command).
        flow_backend: optical flow for the warp error and motion alignment: ``auto`` (RAFT-large when its
            weights are present, else OpenCV DIS), ``raft`` (weights required), ``dis`` (no weights).
        raft_weights: a RAFT-large state dict (default: torch hub's cache of torchvision's file).
        occlusion_check: leave out pixels that fail the forward-backward flow check.
        lpips_net: the LPIPS backbone (``alex``, ``vgg``, ``squeeze``), ``null`` (no LPIPS), or (in code)
            an :class:`~videoedit.metrics.preservation.LPIPS`.
        lpips_weights: the backbone's torchvision state dict (default: torch hub's cache).
        background_protocol: ``outside`` (metrics over the preserved pixels only) or ``pie_bench``
            (PIE-Bench/FiVE: edited regions zeroed in both frames, whole-image metrics).
        max_psnr: PSNR reported for identical pixels (dB).
        device: ``auto`` (the run's device) or a torch device for the metric models.
        flow_cache_dir: folder caching the source flows (keyed by frames + estimator), or ``null``.
        hf_cache_dir: the Hugging Face cache searched for hub ids (default: the usual one).
        reconstruction: write the reconstruction of the source and its PSNR (``quality.reconstruction``; computed
            by ``edit()`` from the method's prepared source, not here).
    """

    def __init__(
        self,
        enabled: bool = True,
        clip_model: str | ClipScorer | None = DEFAULT_CLIP_MODEL,
        pickscore_model: str | ClipScorer | None = DEFAULT_PICKSCORE_MODEL,
        pickscore_processor: str | None = DEFAULT_PICKSCORE_PROCESSOR,
        allow_download: bool = False,
        flow_backend: Literal["dis", "raft", "auto"] = "auto",
        raft_weights: str | None = None,
        occlusion_check: bool = True,
        lpips_net: Literal["alex", "vgg", "squeeze"] | LPIPS | None = "alex",
        lpips_weights: str | None = None,
        background_protocol: Literal["outside", "pie_bench"] = "outside",
        max_psnr: float = 100.0,
        device: str = "auto",
        flow_cache_dir: str | None = None,
        hf_cache_dir: str | None = None,
        reconstruction: bool = True,
    ) -> None:
        self.enabled = enabled
        self.reconstruction = reconstruction
        if (
            isinstance(clip_model, str) and clip_model.strip().lower() == "auto"
        ):  # before the registry: any cached CLIP
            logger.info("metrics.clip_model=auto now means the published model, %s", DEFAULT_CLIP_MODEL)
            clip_model = DEFAULT_CLIP_MODEL
        self.clip_model = clip_model
        self.pickscore_model = pickscore_model
        self.pickscore_processor = pickscore_processor
        self.allow_download = allow_download
        self.flow_backend = flow_backend
        self.raft_weights = raft_weights
        self.occlusion_check = occlusion_check
        self.lpips_net = lpips_net if isinstance(lpips_net, LPIPS) or not is_off(lpips_net) else None
        self.lpips_weights = lpips_weights
        self.background_protocol = background_protocol
        self.max_psnr = max_psnr
        self.device = device
        self.flow_cache_dir = flow_cache_dir
        self.hf_cache_dir = hf_cache_dir
        self._models: dict[str, Any] = {}  # built once: name -> model or the reason it is unavailable

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Evaluator:
        """From the ``metrics`` config block (a missing block = the defaults)."""
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        try:
            return cls(**dict(node or {}))
        except TypeError as err:
            raise InputError(f"Bad `metrics` config {dict(node or {})}: {err}") from err

    def check(self) -> None:
        """Cheap checks of the settings, before a run's expensive work (no model is loaded).

        Raises:
            ConfigError: an unknown ``flow_backend``, ``lpips_net`` or ``background_protocol``;
                ``flow_backend=raft`` without RAFT weights on disk; a model given as a local folder that
                does not exist or lacks files. A hub id that is not cached is not an error: the metric is
                recorded as unavailable, with the reason, after the edits.
        """
        if not self.enabled:
            return
        if self.flow_backend not in FLOW_BACKENDS:
            raise ConfigError(
                f"metrics.flow_backend must be one of {', '.join(FLOW_BACKENDS)}, got {self.flow_backend!r}."
            )
        if self.background_protocol not in PROTOCOLS:
            raise ConfigError(
                f"metrics.background_protocol must be one of {', '.join(PROTOCOLS)}, got {self.background_protocol!r}."
            )
        if isinstance(self.lpips_net, str) and self.lpips_net not in LPIPS_NETS:
            raise ConfigError(
                f"metrics.lpips_net must be one of {', '.join(LPIPS_NETS)} or null, got {self.lpips_net!r}."
            )
        if self.flow_backend == "raft" and raft_weights_path(self.raft_weights) is None:
            raise ConfigError(
                f"metrics.flow_backend=raft but no RAFT-large weights were found "
                f"({self.raft_weights or 'metrics.raft_weights not set'}; nor in torch hub's cache): set "
                "metrics.raft_weights=<state dict file>, or metrics.flow_backend=dis (no weights) or auto."
            )
        if self.lpips_weights and not Path(self.lpips_weights).expanduser().is_file():
            raise ConfigError(f"metrics.lpips_weights={self.lpips_weights} is not a file.")
        for key in ("clip_model", "pickscore_model"):
            spec = getattr(self, key)
            if isinstance(spec, ClipScorer) or is_off(spec):
                continue
            reason = check_model_spec(str(spec), key, self.allow_download, self.hf_cache_dir)
            looks_local = str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1
            if reason is not None and looks_local:  # a local path the user typed: fail now
                raise ConfigError(
                    f"metrics.{key}={spec}: {reason}. Give a folder in transformers layout, a hub id, or "
                    f"metrics.{key}=null."
                )

    # -------------------------------------------------------------------- settings, without loading

    def _model_name(self, key: str) -> str | None:
        """The model name recorded for ``clip_model``/``pickscore_model``, ``None`` when it cannot load."""
        spec = getattr(self, key)
        if isinstance(spec, ClipScorer):
            return spec.name
        if is_off(spec) or check_model_spec(str(spec), key, self.allow_download, self.hf_cache_dir):
            return None
        return str(spec)

    def _lpips_setting(self) -> dict[str, Any] | None:
        if self.lpips_net is None:
            return None
        if isinstance(self.lpips_net, LPIPS):
            return {"net": self.lpips_net.net}
        path = lpips_backbone_path(self.lpips_net, self.lpips_weights)
        return {"net": self.lpips_net} if path is not None else None

    def expected_settings(self) -> dict[str, Any]:
        """What :meth:`evaluate` records in ``quality.settings`` with these settings, found without
        loading a model (flow backend (and RAFT weights), model names, LPIPS backbone, protocol)."""
        flow: dict[str, Any] = {"backend": self.flow_backend}
        if self.flow_backend == "auto":
            flow["backend"] = "raft" if raft_weights_path(self.raft_weights) is not None else "dis"
        if flow["backend"] == "raft":
            from torchvision.models.optical_flow import Raft_Large_Weights

            flow["weights"] = str(raft_weights_path(self.raft_weights) or Raft_Large_Weights.DEFAULT.url)
        return {
            "definitions": DEFINITIONS_VERSION,
            "occlusion_check": self.occlusion_check,
            "max_psnr": self.max_psnr,
            "background_protocol": self.background_protocol,
            "flow": flow,
            "clip_model": self._model_name("clip_model"),
            "pickscore_model": self._model_name("pickscore_model"),
            "lpips": self._lpips_setting(),
        }

    def differences(self, quality: Mapping[str, Any] | None) -> list[str]:
        """Why recorded ``quality`` (a ``metrics.json`` block) is not what these settings compute:
        ``["setting: recorded -> now", ...]``; empty when it is (or when metrics are disabled)."""
        if not self.enabled:
            return []
        recorded = quality.get("settings") if isinstance(quality, Mapping) else None
        if not isinstance(recorded, Mapping):
            return ["no quality metrics recorded"]
        expected = self.expected_settings()
        out = [
            f"{key}: {recorded.get(key)!r} -> {expected[key]!r}"
            for key in (
                "definitions",
                "occlusion_check",
                "max_psnr",
                "background_protocol",
                "clip_model",
                "pickscore_model",
            )
            if recorded.get(key) != expected[key]
        ]
        for key in ("flow", "lpips"):
            now, before = expected[key], recorded.get(key)
            before = before if isinstance(before, Mapping) else None
            if (now is None) != (before is None) or (
                now is not None and any(before.get(k) != v for k, v in now.items())
            ):
                out.append(f"{key}: {dict(before) if before else None!r} -> {now!r}")
        return out

    # -------------------------------------------------------------------- models

    def _device(self, run_device: str | torch.device | None) -> str:
        if self.device != "auto":
            return str(self.device)
        if run_device is not None:
            return str(run_device)
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _model(self, key: str, build: Any) -> Any:
        """``build()`` once; a failure is remembered as its reason (a string; :meth:`evaluate` logs it)."""
        if key not in self._models:
            try:
                self._models[key] = build()
            except (ClipUnavailable, FileNotFoundError, OSError, ValueError, RuntimeError) as err:
                self._models[key] = str(err)
        return self._models[key]

    def clip_scorer(self, device: str) -> ClipScorer | str:
        """The CLIP model, or the reason it is unavailable."""
        if isinstance(self.clip_model, ClipScorer):
            return self.clip_model
        return self._model(
            "clip_model",
            lambda: load_clip_scorer(
                self.clip_model, "clip_model", None, device, self.allow_download, self.hf_cache_dir
            ),
        )

    def pickscore_scorer(self, device: str) -> ClipScorer | str:
        """The PickScore model, or the reason it is unavailable."""
        if isinstance(self.pickscore_model, ClipScorer):
            return self.pickscore_model
        return self._model(
            "pickscore_model",
            lambda: load_clip_scorer(
                self.pickscore_model,
                "pickscore_model",
                self.pickscore_processor,
                device,
                self.allow_download,
                self.hf_cache_dir,
            ),
        )

    def lpips(self, device: str) -> LPIPS | str:
        """The LPIPS network, or the reason it is unavailable."""
        if self.lpips_net is None:
            return "not configured (metrics.lpips_net=null)"
        if isinstance(self.lpips_net, LPIPS):
            return self.lpips_net
        return self._model("lpips", lambda: LPIPS(self.lpips_net, self.lpips_weights, device))

    # -------------------------------------------------------------------- evaluation

    def evaluate(
        self,
        source: np.ndarray,
        edits: Mapping[str, np.ndarray],
        listing: Sequence[Mapping[str, Any]],
        masks: np.ndarray | None = None,
        regions: Sequence[str] = (),
        run_device: str | torch.device | None = None,
    ) -> dict[str, Any]:
        """Every metric of every edit; never raises for a metric that fails (it is recorded).

        Args:
            source: ``(F, H, W, 3)`` uint8, the processed input.
            edits: edit name -> ``(F, H, W, 3)`` uint8.
            listing: one entry per edit with ``name``, ``prompt``, ``local_prompts`` (``sample/edits.json``).
            masks: ``(F, R, H, W)`` bool region masks at the working size, or ``None``.
            regions: the ``R`` region names.
            run_device: the run's device (used by ``device=auto``).
        """
        if not self.enabled:
            return {"skipped": "disabled (metrics.enabled=false)"}
        start = time.perf_counter()
        device = self._device(run_device)
        quality: dict[str, Any] = {"edits": {}, "skipped": {}, "errors": {}}
        records = {key: METRICS[key].record() for key in EDIT_METRICS}
        settings: dict[str, Any] = {
            "definitions": DEFINITIONS_VERSION,
            "occlusion_check": self.occlusion_check,
            "max_psnr": self.max_psnr,
            "background_protocol": self.background_protocol,
        }
        masks = None if masks is None else np.asarray(masks, dtype=bool)

        def unavailable(keys: Sequence[str], reason: str) -> None:
            for key in keys:
                records[key]["unavailable"] = reason
                quality["skipped"][key] = reason

        # temporal: the source's flows (warp error, motion alignment)
        flows: SourceFlows | None = None
        estimator: FlowEstimator | None = None
        try:
            estimator = build_flow_estimator(self.flow_backend, self.raft_weights, device=device)
            settings["flow"] = estimator.settings()
            cache = FlowCache(self.flow_cache_dir) if self.flow_cache_dir else None
            flows = source_flows(source, estimator, cache, occlusion_check=self.occlusion_check)
            quality["source"] = warp_error(source, flows).as_dict()
            for key in _FLOW_KEYS:
                records[key]["backend"] = estimator.settings()
        except Exception as err:  # e.g. RAFT weights missing: no flow metric, the rest goes on
            quality["errors"]["temporal"] = _error(err)
            unavailable(_FLOW_KEYS, f"optical flow failed: {_error(err)}")
            logger.warning("warp error and motion alignment not computed: %s", _error(err))

        clip = self.clip_scorer(device)
        settings["clip_model"] = clip.name if isinstance(clip, ClipScorer) else None
        if isinstance(clip, ClipScorer):
            for key in _CLIP_KEYS:
                records[key].update({"model": clip.name, "backend": "transformers CLIPModel"})
            records["clip_t"]["logit_scale"] = clip.logit_scale
        else:
            unavailable(_CLIP_KEYS, clip)
            logger.warning("CLIP-T and the CLIP frame consistencies are unavailable: %s", clip)
        pick = self.pickscore_scorer(device)
        settings["pickscore_model"] = pick.name if isinstance(pick, ClipScorer) else None
        if isinstance(pick, ClipScorer):
            records["pick_score"].update(
                {
                    "model": pick.name,
                    "processor": self.pickscore_processor or pick.name,
                    "backend": "transformers CLIPModel",
                    "logit_scale": pick.logit_scale,
                }
            )
        else:
            unavailable(["pick_score"], pick)
            logger.warning("PickScore is unavailable: %s", pick)
        lpips = self.lpips(device)
        settings["lpips"] = lpips.settings() if isinstance(lpips, LPIPS) else None
        if isinstance(lpips, LPIPS):
            records["lpips_preserved"].update(lpips.settings())
        else:
            unavailable(["lpips_preserved"], lpips)
            logger.warning("LPIPS is unavailable: %s", lpips)
        backend = "scikit-image" if self.background_protocol == "outside" else "torchmetrics"
        for key in ("psnr_preserved", "ssim_preserved"):
            records[key]["backend"] = backend
        for key in _KEPT_KEYS:
            records[key]["protocol"] = self.background_protocol
        quality["settings"] = settings

        kept_reasons: list[str] = []
        for entry in listing:
            name = str(entry["name"])
            frames = edits.get(name)
            if frames is None:
                quality["errors"][name] = "no frames for this edit"
                continue
            scores: dict[str, Any] = {}
            if flows is not None and estimator is not None:
                try:
                    scores.update(warp_error(frames, flows).as_dict())
                    scores.update(motion_alignment(frames, flows, estimator))
                except Exception as err:
                    quality["errors"][f"{name}/temporal"] = _error(err)
            prompt = str(entry["prompt"])
            for scorer, score, what in ((clip, clip_scores, "clip"), (pick, pick_score, "pick_score")):
                if isinstance(scorer, ClipScorer):
                    try:
                        scores.update(score(frames, prompt, scorer))
                    except Exception as err:
                        quality["errors"][f"{name}/{what}"] = _error(err)
            try:
                kept = preservation(
                    source,
                    frames,
                    masks,
                    list(regions),
                    list(entry.get("local_prompts") or ()),
                    self.max_psnr,
                    lpips if isinstance(lpips, LPIPS) else None,
                    self.background_protocol,
                )
                if "skipped" in kept:
                    scores["preservation_skipped"] = kept.pop("skipped")
                    kept_reasons.append(scores["preservation_skipped"])
                scores.update(kept)
            except Exception as err:
                quality["errors"][f"{name}/preservation"] = _error(err)
            quality["edits"][name] = scores
        if kept_reasons and len(kept_reasons) == len(quality["edits"]):
            unavailable(
                [k for k in _KEPT_KEYS if "unavailable" not in records[k]],
                "; ".join(sorted(set(kept_reasons))),
            )

        quality["mean"] = {}
        for key in SCALAR_METRICS:
            values = [s[key] for s in quality["edits"].values() if isinstance(s.get(key), float)]
            values = [v for v in values if math.isfinite(v)]
            if values:
                quality["mean"][key] = float(np.mean(values))
        quality["metrics"] = records
        quality["seconds"] = round(time.perf_counter() - start, 3)
        if not quality["skipped"]:
            del quality["skipped"]
        if not quality["errors"]:
            del quality["errors"]
        return _clean(quality)


def evaluate_edits(
    config: Mapping[str, Any] | Evaluator | None,
    source: np.ndarray,
    edits: Mapping[str, np.ndarray],
    listing: Sequence[Mapping[str, Any]],
    masks: np.ndarray | torch.Tensor | None,
    regions: Sequence[str],
    run_device: str | torch.device | None = None,
) -> dict[str, Any]:
    """What ``edit()`` calls: :meth:`Evaluator.evaluate` from the ``metrics`` config (or an
    :class:`Evaluator` built from it); never raises."""
    try:
        evaluator = config if isinstance(config, Evaluator) else Evaluator.from_config(config)
        if isinstance(masks, torch.Tensor):
            masks = masks.cpu().numpy()
        return evaluator.evaluate(source, edits, listing, masks, regions, run_device)
    except Exception as err:  # the metrics must never fail a finished edit
        logger.exception("quality metrics failed")
        return {"errors": {"metrics": _error(err)}}


# ------------------------------------------------------------------------------------------ on disk


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Read what the metrics need from a finished result tree.

    Returns:
        ``{"metrics", "source" (F, H, W, 3) uint8, "edits" {name: frames}, "listing", "masks"
        (F, R, H, W) bool or None, "regions"}``.

    Raises:
        InputError: not a finished run folder (no ``COMPLETE``/``metrics.json``) or files are missing.
    """
    run = RunDirectory(run_dir)
    if not RunDirectory.is_complete(run.root) or not run.metrics_path.is_file():
        raise InputError(
            f"{run.root} is not a finished run folder (no {run.marker_path.name} or metrics.json): "
            "give the folder of one run (outputs/<experiment>/<run_id>) or of one sweep job."
        )
    metrics = json.loads(run.metrics_path.read_text(encoding="utf-8"))
    source = read_video(run.root / "infer_samples" / "input").frames
    listing_path = run.sample_dir / "edits.json"
    listing = json.loads(listing_path.read_text(encoding="utf-8")) if listing_path.is_file() else []
    edits = {e["name"]: read_video(run.sample_dir / e["name"]).frames for e in listing}
    regions = list((metrics.get("video") or {}).get("regions") or [])
    masks = None
    if regions and (run.root / "masks").is_dir():
        masks = read_masks(run.root / "masks", regions, list(range(len(source))), source.shape[1:3])
    return {
        "metrics": metrics,
        "source": source,
        "edits": edits,
        "listing": listing,
        "masks": masks,
        "regions": regions,
    }


def evaluate_run(run_dir: str | Path, evaluator: Evaluator, write: bool = True) -> dict[str, Any]:
    """Compute the quality metrics of a finished run folder; with ``write``, merge them into its
    ``metrics.json`` under ``"quality"`` (replacing earlier ones, but keeping the run's
    ``quality.reconstruction``: it needs the inversion, not the result tree). Returns the ``quality`` dict."""
    contents = read_run(run_dir)
    quality = evaluator.evaluate(
        contents["source"], contents["edits"], contents["listing"], contents["masks"], contents["regions"]
    )
    recorded = contents["metrics"].get("quality")
    if (
        isinstance(recorded, Mapping) and "reconstruction" in recorded
    ):  # computed by the run, not from the tree
        quality["reconstruction"] = recorded["reconstruction"]
    if write:
        metrics = contents["metrics"]
        metrics["quality"] = quality
        RunDirectory(run_dir).rewrite_metrics(metrics)  # and its entry in the run's manifest
    return quality


def find_runs(root: str | Path) -> list[Path]:
    """Every finished run folder at or under ``root`` (a run, a sweep, or an output root), sorted.

    Hidden folders (``.hydra``, ``.submitit``) are not searched.
    """
    root = Path(root)
    if RunDirectory.is_complete(root):
        return [root]
    found = []
    for marker in root.rglob("COMPLETE"):
        rel = marker.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if (marker.parent / "metrics.json").is_file():
            found.append(marker.parent)
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]
