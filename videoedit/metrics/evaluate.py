"""All quality metrics of a run: during :func:`videoedit.edit.edit` (from arrays) or on a finished
result tree on disk (``videoedit metrics <run_dir>``). They go into ``metrics.json`` under ``"quality"``.

Per edit (``quality.edits.<edit name>``):

* temporal consistency (``videoedit/metrics/temporal.py``): ``warp_error`` (8-bit levels), ``warp_mse``
  (x10^-3), along the source video's optical flow, occlusion-masked, in float;
* CLIP (``videoedit/metrics/clip_score.py``): ``clip_t`` (frames vs the edit's full prompt) and ``clip_f``
  (consecutive frames), cosines, when CLIP weights are available;
* preservation (``videoedit/metrics/preservation.py``): ``psnr_preserved`` (dB) and ``ssim_preserved``
  outside the edited regions.

``quality.source`` holds the warp error of the source itself (the flow's floor), ``quality.mean`` the
mean of every scalar metric over the edits, ``quality.skipped``/``quality.errors`` why a metric is
missing. A metric that cannot be computed never fails the run: it records why.

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
    ClipEncoder,
    ClipUnavailable,
    check_clip_model,
    clip_scores,
    expected_clip_name,
    load_clip_encoder,
)
from videoedit.metrics.preservation import preservation
from videoedit.metrics.temporal import SourceFlows, source_flows, warp_error
from videoedit.motion import FlowCache, build_flow_estimator, raft_weights_path

logger = logging.getLogger(__name__)

FLOW_BACKENDS = ("dis", "raft", "auto")

# scalar metrics averaged over a run's edits (quality.mean) and shown by the report
SCALAR_METRICS = (
    "warp_error",
    "warp_mse",
    "clip_t",
    "clip_f",
    "psnr_preserved",
    "ssim_preserved",
)


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
        clip_model: ``auto`` (CLIP weights found in the local HF cache, never downloaded), a transformers
            hub id or folder, ``open_clip:<arch>:<tag or file>``, ``null`` (no CLIP scores), or (in
            code) a :class:`ClipEncoder`.
        flow_backend: optical flow of the source for the warp error: ``dis`` (OpenCV, no weights),
            ``raft`` (torchvision RAFT-large weights needed; what StreamV2V's tool uses), ``auto``.
        raft_weights: a RAFT-large state dict (``raft`` / ``auto``).
        occlusion_check: leave out pixels that fail the forward-backward flow check.
        max_psnr: PSNR reported for identical pixels (dB).
        device: ``auto`` (the run's device) or a torch device for CLIP and RAFT.
        flow_cache_dir: folder caching the source flows (keyed by frames + estimator), or ``null``.
        hf_cache_dir: the Hugging Face cache searched for CLIP weights (default: the usual one).
    """

    def __init__(
        self,
        enabled: bool = True,
        clip_model: str | ClipEncoder | None = "auto",
        flow_backend: Literal["dis", "raft", "auto"] = "dis",
        raft_weights: str | None = None,
        occlusion_check: bool = True,
        max_psnr: float = 100.0,
        device: str = "auto",
        flow_cache_dir: str | None = None,
        hf_cache_dir: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.clip_model = clip_model
        self.flow_backend = flow_backend
        self.raft_weights = raft_weights
        self.occlusion_check = occlusion_check
        self.max_psnr = max_psnr
        self.device = device
        self.flow_cache_dir = flow_cache_dir
        self.hf_cache_dir = hf_cache_dir
        self._clip: ClipEncoder | None = None
        self._clip_reason: str | None = None

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
            ConfigError: an unknown ``flow_backend``; ``flow_backend=raft`` without RAFT weights on disk;
                an explicit ``clip_model`` that cannot be found. ``auto`` never fails here: what it does
                not find is recorded as skipped after the edits.
        """
        if not self.enabled:
            return
        if self.flow_backend not in FLOW_BACKENDS:
            raise ConfigError(
                f"metrics.flow_backend must be one of {', '.join(FLOW_BACKENDS)}, got {self.flow_backend!r}."
            )
        if self.flow_backend == "raft" and raft_weights_path(self.raft_weights) is None:
            raise ConfigError(
                f"metrics.flow_backend=raft but no RAFT-large weights were found "
                f"({self.raft_weights or 'metrics.raft_weights not set'}; nor in torch hub's cache): set "
                "metrics.raft_weights=<state dict file>, or metrics.flow_backend=dis (no weights) or auto."
            )
        if not isinstance(self.clip_model, ClipEncoder):
            try:
                check_clip_model(self.clip_model, self.hf_cache_dir)
            except ClipUnavailable as err:
                raise ConfigError(
                    f"metrics.clip_model={self.clip_model}: {err}. Give a CLIP model you have (hub id in "
                    "the local cache, folder, open_clip:<arch>:<tag>), metrics.clip_model=auto (whatever is "
                    "cached, else no CLIP scores) or metrics.clip_model=null."
                ) from err

    def expected_settings(self) -> dict[str, Any]:
        """What :meth:`evaluate` records in ``quality.settings`` with these settings, found without
        loading a model (the flow's ``backend`` (and RAFT ``weights``), the CLIP model's name)."""
        flow: dict[str, Any] = {"backend": self.flow_backend}
        if self.flow_backend == "auto":
            flow["backend"] = "raft" if raft_weights_path(self.raft_weights) is not None else "dis"
        if flow["backend"] == "raft":
            from torchvision.models.optical_flow import Raft_Large_Weights

            flow["weights"] = str(raft_weights_path(self.raft_weights) or Raft_Large_Weights.DEFAULT.url)
        return {
            "occlusion_check": self.occlusion_check,
            "max_psnr": self.max_psnr,
            "flow": flow,
            "clip_model": expected_clip_name(self.clip_model, self.hf_cache_dir),
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
            for key in ("occlusion_check", "max_psnr", "clip_model")
            if recorded.get(key) != expected[key]
        ]
        flow = recorded.get("flow") if isinstance(recorded.get("flow"), Mapping) else {}
        if any(flow.get(k) != v for k, v in expected["flow"].items()):
            out.append(f"flow: {dict(flow) or None!r} -> {expected['flow']!r}")
        return out

    def _device(self, run_device: str | torch.device | None) -> str:
        if self.device != "auto":
            return str(self.device)
        if run_device is not None:
            return str(run_device)
        return "cuda" if torch.cuda.is_available() else "cpu"

    def clip_encoder(self, device: str) -> ClipEncoder:
        """The CLIP encoder (built once); raises :class:`ClipUnavailable` with the reason."""
        if isinstance(self.clip_model, ClipEncoder):  # an encoder built by the caller
            return self.clip_model
        if self._clip is None and self._clip_reason is None:
            try:
                self._clip = load_clip_encoder(self.clip_model, device=device, cache_dir=self.hf_cache_dir)
            except ClipUnavailable as err:
                self._clip_reason = str(err)
        if self._clip is None:
            raise ClipUnavailable(self._clip_reason or "unavailable")
        return self._clip

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
        settings: dict[str, Any] = {"occlusion_check": self.occlusion_check, "max_psnr": self.max_psnr}
        masks = None if masks is None else np.asarray(masks, dtype=bool)

        flows: SourceFlows | None = None
        try:
            estimator = build_flow_estimator(self.flow_backend, self.raft_weights, device=device)
            settings["flow"] = estimator.settings()
            cache = FlowCache(self.flow_cache_dir) if self.flow_cache_dir else None
            flows = source_flows(source, estimator, cache, occlusion_check=self.occlusion_check)
            quality["source"] = warp_error(source, flows).as_dict()
        except Exception as err:  # e.g. RAFT weights missing: no temporal metric, the rest goes on
            quality["errors"]["temporal"] = _error(err)
            logger.warning("warp error not computed: %s", _error(err))

        clip: ClipEncoder | None = None
        try:
            clip = self.clip_encoder(device)
            settings["clip_model"] = clip.name
        except ClipUnavailable as err:
            quality["skipped"]["clip"] = str(err)
            settings["clip_model"] = None
            logger.info("CLIP scores skipped: %s", err)
        quality["settings"] = settings

        for entry in listing:
            name = str(entry["name"])
            frames = edits.get(name)
            if frames is None:
                quality["errors"][name] = "no frames for this edit"
                continue
            scores: dict[str, Any] = {}
            if flows is not None:
                try:
                    scores.update(warp_error(frames, flows).as_dict())
                except Exception as err:
                    quality["errors"][f"{name}/temporal"] = _error(err)
            if clip is not None:
                try:
                    scores.update(clip_scores(frames, str(entry["prompt"]), clip))
                    scores.pop("clip_model", None)
                except Exception as err:
                    quality["errors"][f"{name}/clip"] = _error(err)
            try:
                kept = preservation(
                    source,
                    frames,
                    masks,
                    list(regions),
                    list(entry.get("local_prompts") or ()),
                    self.max_psnr,
                )
                if "skipped" in kept:
                    scores["preservation_skipped"] = kept.pop("skipped")
                scores.update(kept)
            except Exception as err:
                quality["errors"][f"{name}/preservation"] = _error(err)
            quality["edits"][name] = scores

        quality["mean"] = {}
        for key in SCALAR_METRICS:
            values = [s[key] for s in quality["edits"].values() if isinstance(s.get(key), float)]
            values = [v for v in values if math.isfinite(v)]
            if values:
                quality["mean"][key] = float(np.mean(values))
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
    ``metrics.json`` under ``"quality"`` (replacing earlier ones). Returns the ``quality`` dict."""
    contents = read_run(run_dir)
    quality = evaluator.evaluate(
        contents["source"], contents["edits"], contents["listing"], contents["masks"], contents["regions"]
    )
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
