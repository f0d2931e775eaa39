"""Reports over many runs: one table (CSV + Markdown), plots, and labelled comparison grids/videos.

``videoedit report <sweep_dir>`` reads every finished run under a folder (each job of a Hydra sweep,
or any tree of runs): its ``metrics.json`` and, for sweeps, ``.hydra/overrides.yaml``. It writes into
``<sweep_dir>/report/`` (or ``--out``):

* ``runs.csv``: one row per edit (job x prompt x seed): the swept values, the method, the edit's
  ``sample_seed``, the quality metrics (``metrics.json`` ``quality``) with the flow estimator and CLIP
  model they were computed with (a warning when runs mix settings), the run facts (timings, peak
  memory, frames, resolution);
* ``summary.csv``: the mean and standard deviation over seeds of each setting (method x swept values); a
  method whose runs record ``method.seed_dependent: false`` (deterministic) gets no spread over seeds, and
  a warning, when the sweep varies them;
* ``report.md``: both tables in Markdown, the overrides shared by all jobs, the jobs of the sweep that have
  no finished run (from its ``multirun.yaml``), units and directions of the metrics
  (``videoedit.metrics.definitions``). Settings that cannot change a result (``force``, ``progress_bar``,
  ``sweep_split``, ``cache_*``) are never swept parameters;
* ``plots/<swept key>.png``: each metric against each numeric swept parameter, one line per method
  (mean over seeds, error bars = standard deviation), each axis saying whether higher or lower is better;
  ``plots/settings.png`` when nothing numeric is swept;
* ``comparison.png`` (a few frames of source | run A | run B ..., labelled) and ``comparison.mp4``.

``videoedit compare RUN_A RUN_B ...`` builds the same grid/video from runs of separate commands (e.g. a
TokenFlow run and a VideoGrain run of the same clip). This is how paper figures are rebuilt.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from videoedit.errors import InputError
from videoedit.io.atomic import atomic_path, write_text
from videoedit.io.result_tree import RunDirectory
from videoedit.io.video import read_video
from videoedit.io.visualize import caption_bar, side_by_side
from videoedit.io.writers import write_mp4
from videoedit.metrics.definitions import METRICS, axis_label
from videoedit.metrics.evaluate import SCALAR_METRICS, find_runs

logger = logging.getLogger(__name__)

SEED_KEYS = ("seed", "sample_seeds")  # swept keys that only repeat a setting: averaged over in summaries
# keys that never change a result: not parameters of a sweep even when their values differ between jobs
NOT_PARAMETERS = ("force", "progress_bar", "sweep_split", "cache_inversion", "cache_annotations")
# quality.settings that make metrics comparable only when equal across the runs of a report
METRIC_SETTINGS = (
    "definitions",
    "flow",
    "clip_model",
    "pickscore_model",
    "lpips",
    "background_protocol",
    "occlusion_check",
    "max_psnr",
)
RUN_METRICS = ("reconstruction_psnr",)  # one value per run (metrics.json quality.reconstruction.psnr)
FACT_COLUMNS = ("edit_s", "inversion_s", "total_s", "cuda_peak_gib", "cpu_peak_gib")
PLOT_METRICS = (*SCALAR_METRICS, *RUN_METRICS, "edit_s")
_GIB = 1024**3


@dataclass
class RunRecord:
    """One finished run: its folder, name in the report, Hydra overrides and ``metrics.json``."""

    path: Path
    job: str
    overrides: dict[str, str]
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        method = self.metrics.get("method")
        return str(method.get("name", "?")) if isinstance(method, Mapping) else str(method or "?")


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """``["method.guidance_scale=5", "+experiment=x", "~key"]`` -> ``{"method.guidance_scale": "5", ...}``."""
    out = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        key = key.lstrip("+~")
        out[key] = value if sep else "<deleted>"
    return out


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def collect_runs(root: str | Path) -> list[RunRecord]:
    """Every finished run under ``root`` (sorted by job), with its overrides and metrics."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder: give a sweep folder (outputs/<experiment>/multirun/<id>).")
    records = []
    for path in find_runs(root):
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        overrides_file = path / ".hydra" / "overrides.yaml"
        overrides = (
            parse_overrides(OmegaConf.to_container(OmegaConf.load(overrides_file)))
            if overrides_file.is_file()
            else {}
        )
        config_file = path / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(config_file)) if config_file.is_file() else {}
        job = str(path.relative_to(root)) if path != root else path.name
        records.append(RunRecord(path, job, overrides, metrics, _flatten(config)))
    if not records:
        raise InputError(
            f"No finished run under {root} (a run folder has metrics.json and COMPLETE). "
            "Is the sweep still running, or is this the wrong folder?"
        )
    return records


def swept_keys(records: Sequence[RunRecord]) -> list[str]:
    """The parameters that differ between runs: Hydra overrides whose value differs, or (for runs
    without overrides, e.g. separate commands) the config keys that differ, ``paths.*`` left out."""
    if all(r.overrides for r in records):
        keys = sorted({k for r in records for k in r.overrides if _is_parameter(k)})
        return [k for k in keys if len({r.overrides.get(k) for r in records}) > 1]
    keys = sorted({k for r in records for k in r.config if _is_parameter(k)})
    differ = [
        k for k in keys if not k.startswith("paths.") and len({repr(r.config.get(k)) for r in records}) > 1
    ]
    if len({r.method for r in records}) > 1:  # method-specific keys only say "another method"
        differ = [k for k in differ if not k.startswith("method.") or all(k in r.config for r in records)]
    return differ


def _is_parameter(key: str) -> bool:
    """Whether a config key can change a result (``force``, ``progress_bar``, ``hydra.*``... cannot)."""
    return key.split(".")[0] not in NOT_PARAMETERS and not key.startswith(("hydra.", "hydra/"))


def _value(record: RunRecord, key: str) -> Any:
    raw = record.overrides.get(key) if record.overrides else record.config.get(key)
    return _number(raw)


def _number(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            try:
                return float(raw)
            except ValueError:
                return raw
    return raw


def _round(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


def edit_rows(records: Sequence[RunRecord], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per edit of every run (see the module docstring for the columns)."""
    rows = []
    for record in records:
        m = record.metrics
        quality = m.get("quality") or {}
        timings = m.get("timings_s") or {}
        memory = m.get("peak_memory") or {}
        video = m.get("video") or {}
        for entry in m.get("edits") or []:
            name = entry.get("name")
            scores = (quality.get("edits") or {}).get(name) or {}
            row: dict[str, Any] = {"job": record.job}
            row.update({k: _value(record, k) for k in keys})
            row.update(
                {
                    "method": record.method,
                    "edit": name,
                    # the edit's own seed (sample_seeds entry); a swept global `seed` keeps its column
                    "sample_seed": entry.get("seed"),
                    "prompt": entry.get("prompt"),
                }
            )
            row.update({k: scores.get(k) for k in SCALAR_METRICS})
            reconstruction = quality.get("reconstruction")
            row["reconstruction_psnr"] = (
                reconstruction.get("psnr") if isinstance(reconstruction, Mapping) else None
            )
            method = m.get("method")
            row["seed_dependent"] = method.get("seed_dependent") if isinstance(method, Mapping) else None
            row["source_warp_error"] = (quality.get("source") or {}).get("warp_error")
            settings = quality.get("settings") or {}
            row["flow_backend"] = (settings.get("flow") or {}).get("backend")
            row["clip_model"] = settings.get("clip_model")
            row["edit_s"] = _round(entry.get("seconds"))
            row["inversion_s"] = _round(timings.get("inversion"))
            row["total_s"] = _round(timings.get("total"))
            cuda = memory.get("cuda_max_allocated_bytes")
            row["cuda_peak_gib"] = _round(cuda / _GIB) if cuda else None
            rss = memory.get("cpu_max_rss_bytes")
            row["cpu_peak_gib"] = _round(rss / _GIB) if rss else None
            row["frames"] = video.get("frames")
            row["resolution"] = f"{video.get('height')}x{video.get('width')}" if video else None
            row["inversion_cache"] = (m.get("inversion") or {}).get("cache")
            row["device"] = m.get("device")
            rows.append(row)
    return rows


def mixed_metric_settings(records: Sequence[RunRecord]) -> dict[str, list[str]]:
    """``{setting: [distinct values]}`` for each quality setting (flow estimator, CLIP model, occlusion
    check, max PSNR) that differs between runs whose metrics were computed: their numbers do not compare."""
    values: dict[str, set[str]] = {k: set() for k in METRIC_SETTINGS}
    for record in records:
        settings = (record.metrics.get("quality") or {}).get("settings")
        if not isinstance(settings, Mapping):
            continue
        for key in METRIC_SETTINGS:
            values[key].add(json.dumps(settings.get(key), sort_keys=True))
    return {k: sorted(v) for k, v in values.items() if len(v) > 1}


def _drop_empty(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(rows[0]) if rows else []
    return [c for c in columns if any(r.get(c) is not None for r in rows)]


def summarize(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], warnings: list[str] | None = None
) -> list[dict[str, Any]]:
    """Mean and standard deviation (over seeds) of each setting: method x swept non-seed values.

    A setting whose runs vary the seed but record ``method.seed_dependent: false`` (a deterministic method:
    the seed cannot change its result) gets no standard deviation (``seed_dependent: False``) and a
    warning appended to ``warnings``, instead of a silent std of 0.
    """
    group_keys = ["method", *[k for k in keys if k not in SEED_KEYS and k != "method"]]
    if len({r.get("prompt") for r in rows}) > 1:
        group_keys.append("prompt")
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in group_keys), []).append(row)
    out = []
    for values, members in groups.items():
        item: dict[str, Any] = dict(zip(group_keys, values))
        item["n"] = len(members)
        seeds = sorted({(r.get("seed"), r.get("sample_seed")) for r in members}, key=repr)
        deterministic = len(seeds) > 1 and all(r.get("seed_dependent") is False for r in members)
        if deterministic:
            item["seed_dependent"] = False
            shown = ", ".join(f"{k}={v}" for k, v in item.items() if k not in ("n", "seed_dependent"))
            message = (
                f"{shown}: the sweep varies the seed over {len(seeds)} values, but the method records "
                "seed_dependent=false (its result cannot depend on the seed): the runs are repeats, no "
                "spread over seeds is reported"
            )
            logger.warning(message)
            if warnings is not None:
                warnings.append(message)
        for metric in (*SCALAR_METRICS, *RUN_METRICS, *FACT_COLUMNS):
            data = [r[metric] for r in members if isinstance(r.get(metric), int | float)]
            if not data:
                continue
            item[metric] = float(np.mean(data))
            spread = len(data) > 1 and not deterministic
            item[f"{metric}_std"] = float(np.std(data, ddof=1)) if spread else None
        out.append(item)
    return out


def expected_jobs(root: str | Path) -> list[dict[str, str]] | None:
    """The jobs a Hydra sweep folder was launched with (each as parsed overrides), from its ``multirun.yaml``
    and the basic sweeper's expansion (cartesian product, in Hydra's order); ``None`` when unknown (no
    ``multirun.yaml``, or another sweeper)."""
    path = Path(root) / "multirun.yaml"
    if not path.is_file():
        return None
    hydra = OmegaConf.load(path).get("hydra") or {}
    sweeper = str(OmegaConf.select(hydra, "sweeper._target_", default="") or "")
    if not sweeper.endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(hydra, "sweeper.params", default=None) or {}
    task = list(OmegaConf.select(hydra, "overrides.task", default=None) or [])
    arguments = [f"{k}={v}" for k, v in params.items()] + [str(t) for t in task]
    overrides = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(overrides, None)
    return [parse_overrides(job) for batch in batches for job in batch]


def missing_jobs(root: str | Path, records: Sequence[RunRecord]) -> list[str]:
    """The jobs of a sweep without a finished run: ``"job <i> (<swept values>): not started"`` or
    ``"...: started, not finished (<folder>)"``. Empty when the sweep's job list is unknown."""
    jobs = expected_jobs(root)
    if not jobs:
        return []
    finished = [r.overrides for r in records]
    started: dict[str, Path] = {}
    for path in sorted(Path(root).glob("*/.hydra/overrides.yaml")):
        if not RunDirectory.is_complete(path.parent.parent):
            lines = OmegaConf.to_container(OmegaConf.load(path))
            started[json.dumps(parse_overrides(lines), sort_keys=True)] = path.parent.parent
    varying = [k for k in dict.fromkeys(k for job in jobs for k in job) if len({j.get(k) for j in jobs}) > 1]
    out = []
    for number, job in enumerate(jobs):
        if job in finished:
            continue
        label = " ".join(f"{k}={job.get(k)}" for k in varying if _is_parameter(k)) or "the only job"
        folder = started.get(json.dumps(job, sort_keys=True))
        state = f"started, not finished ({folder})" if folder else "not started"
        out.append(f"job {number} ({label}): {state}")
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) for c in columns})
    return path


# ------------------------------------------------------------------------------------------ plots


def plot_metrics(summary: Sequence[Mapping[str, Any]], keys: Sequence[str], out_dir: Path) -> list[Path]:
    """Each metric vs each numeric swept parameter, one line per method (and other swept values).

    Without a numeric swept parameter: one bar chart of every metric per setting. Returns the files.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in PLOT_METRICS if any(isinstance(s.get(m), float) for s in summary)]
    if not metrics or not summary:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    params = [k for k in keys if k not in SEED_KEYS and k != "method"]
    numeric = [k for k in params if all(isinstance(s.get(k), int | float) for s in summary)]
    written = []
    for x_key in numeric:
        others = [k for k in params if k != x_key]
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
        lines: dict[str, list[Mapping[str, Any]]] = {}
        for s in summary:
            label = " ".join([str(s["method"]), *[f"{k.split('.')[-1]}={s.get(k)}" for k in others]])
            lines.setdefault(label, []).append(s)
        for ax, metric in zip(axes[0], metrics):
            for label, points in lines.items():
                points = sorted(
                    (p for p in points if isinstance(p.get(metric), float)), key=lambda p: p[x_key]
                )
                if not points:
                    continue
                ax.errorbar(
                    [p[x_key] for p in points],
                    [p[metric] for p in points],
                    yerr=[p.get(f"{metric}_std") or 0.0 for p in points],
                    marker="o",
                    capsize=3,
                    label=label,
                )
            ax.set_xlabel(x_key)
            ax.set_ylabel(axis_label(metric), fontsize=8)
            ax.set_title(METRICS[metric].label if metric in METRICS else metric)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{x_key.replace('/', '_')}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written.append(path)
    if not numeric:
        labels = [
            " ".join([str(s["method"]), *[f"{k.split('.')[-1]}={s.get(k)}" for k in params]]) for s in summary
        ]
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            values = [s.get(metric) if isinstance(s.get(metric), float) else np.nan for s in summary]
            errors = [s.get(f"{metric}_std") or 0.0 for s in summary]
            ax.bar(range(len(summary)), values, yerr=errors, capsize=3)
            ax.set_xticks(range(len(summary)), labels, rotation=30, ha="right", fontsize=7)
            ax.set_ylabel(axis_label(metric), fontsize=8)
            ax.set_title(METRICS[metric].label if metric in METRICS else metric)
        fig.tight_layout()
        path = out_dir / "settings.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------ grids


def comparison_video(videos: Sequence[np.ndarray], labels: Sequence[str], gap: int = 4) -> np.ndarray:
    """Videos ``(F, H, W, 3)`` uint8 side by side, each under its (wrapped) caption: ``(F, H', W', 3)``."""
    return side_by_side(videos, labels, gap=gap, wrap=True)


def comparison_grid(
    videos: Sequence[np.ndarray], labels: Sequence[str], num_frames: int = 4, gap: int = 4
) -> np.ndarray:
    """A figure image: one labelled column per video, ``num_frames`` evenly spaced frames as rows.

    Args:
        videos: ``(F, H, W, 3)`` uint8 each, same ``F`` and ``H``.
        labels: one caption per column (wrapped at spaces to the column width).

    Returns:
        ``(H', W', 3)`` uint8.
    """
    lengths = {len(v) for v in videos}
    if len(lengths) != 1:
        raise ValueError(f"videos have different lengths {sorted(lengths)}")
    count = lengths.pop()
    picks = np.unique(np.linspace(0, count - 1, min(num_frames, count)).round().astype(int))
    captions = [
        caption_bar(label, v.shape[2], v.shape[1], wrap=True) for v, label in zip(videos, labels, strict=True)
    ]
    top = max(c.shape[0] for c in captions)
    columns = []
    for video, caption in zip(videos, captions):
        width = video.shape[2]
        parts = [np.pad(caption, ((0, top - caption.shape[0]), (0, 0), (0, 0)))]
        for i in picks:
            parts += [np.full((gap, width, 3), 255, dtype=np.uint8), video[i]]
        columns.append(np.concatenate(parts, axis=0)[None])
    return side_by_side(columns, None, gap=gap)[0]


def run_edit_frames(run_dir: Path, edit: str | None = None) -> tuple[str, np.ndarray]:
    """``(edit name, frames)`` of one edit of a finished run (the first edit when ``edit`` is None)."""
    listing_path = run_dir / "sample" / "edits.json"
    listing = json.loads(listing_path.read_text(encoding="utf-8")) if listing_path.is_file() else []
    names = [e["name"] for e in listing]
    if not names:
        raise InputError(f"{run_dir} has no edits (sample/edits.json).")
    name = edit or names[0]
    if name not in names:
        raise InputError(f"{run_dir} has no edit {name!r}; it has {names}.")
    return name, read_video(run_dir / "sample" / name).frames


def build_comparison(
    runs: Sequence[Path],
    labels: Sequence[str],
    out_dir: Path,
    edit: str | None = None,
    num_frames: int = 4,
    fps: float = 8.0,
    name: str = "comparison",
) -> dict[str, Path]:
    """``<name>.png`` (grid) and ``<name>.mp4`` (side by side) of source | run 1 | run 2 ..., labelled.

    The source column is the first run's processed input; runs whose frames differ in size or count
    from it are left out (logged).
    """
    if len(runs) != len(labels):
        raise InputError(f"{len(runs)} runs but {len(labels)} labels: give one label per run.")
    source = read_video(Path(runs[0]) / "infer_samples" / "input").frames
    videos, names = [source], ["source"]
    for run, label in zip(runs, labels):
        _, frames = run_edit_frames(Path(run), edit)
        if frames.shape != source.shape:
            logger.warning(
                "left out of the comparison: %s (frames %s, source %s)", run, frames.shape, source.shape
            )
            continue
        videos.append(frames)
        names.append(label)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = comparison_grid(videos, names, num_frames)
    png = out_dir / f"{name}.png"
    from PIL import Image

    with atomic_path(png) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    mp4 = write_mp4(out_dir / f"{name}.mp4", comparison_video(videos, names), fps)
    return {"grid": png, "video": mp4}


def _short_label(record: RunRecord, keys: Sequence[str]) -> str:
    """``ddim guidance_scale=5 seed=0``: the method, then each swept value (key's last part)."""
    parts = [record.method]
    for key in keys:
        if key != "method":
            parts.append(f"{key.split('.')[-1]}={_value(record, key)}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ report


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out_dir: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    swept: list[str]
    files: dict[str, Path]
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def units_legend(columns: Sequence[str]) -> str:
    """``"warp_error: 8-bit levels, lower is better; ..."`` for the metric columns shown (the registry's words)."""
    parts = [f"{k}: {METRICS[k].unit}, {METRICS[k].direction}" for k in columns if k in METRICS]
    return "Units and directions: " + "; ".join(parts) + ". Definitions: docs/metrics.md." if parts else ""


def build_report(
    root: str | Path,
    out: str | Path | None = None,
    edit: str | None = None,
    num_frames: int = 4,
    max_columns: int = 8,
    plots: bool = True,
    grid: bool = True,
) -> Report:
    """Aggregate every finished run under ``root`` (see the module docstring).

    Args:
        root: a sweep folder (or any folder of runs).
        out: where to write (default ``<root>/report``).
        edit: the edit shown in the comparison (default: each run's first edit).
        num_frames: frames (rows) of the comparison grid.
        max_columns: runs shown in the comparison (the first ones, by job number).
        plots, grid: write the plots / the comparison grid and video.
    """
    root = Path(root)
    out_dir = Path(out) if out else root / "report"
    records = collect_runs(root)
    keys = swept_keys(records)
    rows = edit_rows(records, keys)
    columns = _drop_empty(rows)
    warnings: list[str] = []
    summary = summarize(rows, keys, warnings)
    summary_columns = _drop_empty(summary)
    missing = missing_jobs(root, records)
    if missing:
        logger.warning("%d jobs of the sweep have no finished run: %s", len(missing), "; ".join(missing))
    files = {
        "runs_csv": write_csv(out_dir / "runs.csv", rows, columns),
        "summary_csv": write_csv(out_dir / "summary.csv", summary, summary_columns),
    }
    mixed = mixed_metric_settings(records)
    if mixed:
        logger.warning(
            "the runs' quality metrics were computed with different settings (%s): their numbers do not "
            "compare; recompute them with one setting: videoedit metrics %s --flow-backend <b> --clip-model <m>",
            "; ".join(f"{k}: {', '.join(v)}" for k, v in mixed.items()),
            root,
        )
    common = sorted(
        {f"{k}={v}" for r in records for k, v in r.overrides.items() if k not in keys and _is_parameter(k)}
    )
    main_columns = [c for c in columns if c not in ("prompt", "device", "inversion_cache")]
    summary_shown = [c for c in summary_columns if not c.endswith("_std") or c[:-4] in SCALAR_METRICS]
    text = [
        f"# Report: {root}",
        "",
        f"{len(records)} runs, {len(rows)} edits. Swept: {', '.join(keys) or 'nothing'}.",
        f"Common overrides: {' '.join(common) or 'none'}.",
        "",
        *(
            [
                "**Warning: the quality metrics were computed with different settings** ("
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in mixed.items())
                + "): their numbers do not compare. Recompute them with one setting: "
                + f"`videoedit metrics {root} --flow-backend <b> --clip-model <m>`.",
                "",
            ]
            if mixed
            else []
        ),
        *(
            [
                f"**Missing jobs ({len(missing)})**: the sweep is not finished:",
                "",
                *[f"- {m}" for m in missing],
                "",
            ]
            if missing
            else []
        ),
        *[line for w in warnings for line in (f"**Warning (seeds)**: {w}.", "")],
        units_legend(columns) + " Times in s, memory in GiB.",
        "",
        "## Per edit",
        "",
        markdown_table(rows, main_columns),
        "",
        "## Per setting (mean over seeds; _std = standard deviation)",
        "",
        markdown_table(summary, summary_shown),
        "",
    ]
    if plots:
        for path in plot_metrics(summary, keys, out_dir / "plots"):
            files[f"plot:{path.stem}"] = path
            text += [f"![{path.stem}](plots/{path.name})", ""]
    if grid:
        shown = records[:max_columns]
        try:
            fps = float((shown[0].metrics.get("video") or {}).get("fps") or 8.0)
            made = build_comparison(
                [r.path for r in shown],
                [_short_label(r, keys) for r in shown],
                out_dir,
                edit,
                num_frames,
                fps,
            )
            files.update(made)
            text += ["![comparison](comparison.png)", ""]
        except (InputError, ValueError) as err:
            logger.warning("no comparison grid: %s", err)
    files["markdown"] = write_text(out_dir / "report.md", "\n".join(text))
    return Report(out_dir, rows, summary, keys, files, missing, warnings)
