"""The leaderboard of a bench: per method, the mean and spread of every metric, and cost relative to plain
sampling of the same backbone on the same clip.

Reads ``<bench>/runs/<label>/<clip>/`` (``metrics.json``, ``config.yaml`` with its ``bench`` block) and writes
``<bench>/leaderboard/``:

* ``edits.csv``: one row per edit (method x clip x prompt x seed): every metric, the run's cost;
* ``leaderboard.csv`` / ``leaderboard.md``: one row per method label: ``n`` edits, for each metric the mean
  and standard deviation over edits (``<metric>_std``), ``reconstruction_psnr`` when runs record it, and cost:
  ``latency_s`` (seconds per edit: inversion + edits, / number of edits), ``peak_memory_gib`` and their ratios
  to the backbone's reference method on the same clip (``latency_rel``, ``memory_rel``, mean over clips);
  ``leaderboard.md`` also lists what is missing (jobs not finished, metrics unavailable with their reasons)
  and every metric's definition, source and direction (``videoedit.metrics.definitions``);
* ``plots/metrics.png`` and ``plots/cost.png``: bars (mean, error bar = std) per method; every axis says
  whether higher or lower is better.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from videoedit.io.atomic import atomic_path, write_text
from videoedit.io.result_tree import RunDirectory
from videoedit.metrics.definitions import COST_METRICS, EDIT_METRICS, METRICS, axis_label
from videoedit.reports import markdown_table, write_csv

_GIB = 1024**3
_EDIT = re.compile(r"^edit(\d+)_seed(-?\d+)$")


@dataclass
class BenchRun:
    """One finished job of a bench."""

    path: Path
    bench: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def label(self) -> str:
        return str(self.bench["label"])

    @property
    def clip(self) -> str:
        return str(self.bench["clip_id"])

    def latency(self) -> float | None:
        """Seconds per edit: (inversion + every edit) / number of edits."""
        edits = self.metrics.get("edits") or []
        seconds = [e.get("seconds") for e in edits if isinstance(e.get("seconds"), int | float)]
        if not seconds:
            return None
        inversion = (self.metrics.get("timings_s") or {}).get("inversion") or 0.0
        return (float(inversion) + float(sum(seconds))) / len(seconds)

    def peak_memory_gib(self) -> float | None:
        """CUDA peak allocated when the run used CUDA, else the peak resident memory of the run."""
        memory = self.metrics.get("peak_memory") or {}
        value = memory.get("cuda_max_allocated_bytes") or memory.get("cpu_max_rss_bytes")
        return float(value) / _GIB if value else None

    def reconstruction_psnr(self) -> float | None:
        block = (self.metrics.get("quality") or {}).get("reconstruction") or {}
        value = block.get("psnr") if isinstance(block, Mapping) else None
        return float(value) if isinstance(value, int | float) else None


_JOB = re.compile(r"#\d+ : .*\+bench_clip=(\S+)")


def job_errors(bench_dir: Path, label: str) -> dict[str, str]:
    """``{clip: the last "error: ..." line its job printed}`` from ``<bench>/logs/<label>.log``."""
    path = bench_dir / "logs" / f"{label}.log"
    if not path.is_file():
        return {}
    errors: dict[str, str] = {}
    clip = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _JOB.search(line)
        if match:
            clip = match.group(1)
        elif clip is not None and line.startswith("error: "):
            errors[clip] = line[len("error: ") :].strip()
    return errors


def collect(bench_dir: str | Path) -> tuple[list[BenchRun], list[str]]:
    """The finished runs under ``<bench_dir>/runs`` and, for every job config without a finished run, why.

    Returns:
        ``(runs, missing)``; ``missing`` entries read ``"<label> on <clip>: not started"`` or
        ``"<label> on <clip>: started, not finished (see <dir>/run.log)"``, followed by the job's error when
        the bench's log holds one (``: error: ...``).
    """
    bench_dir = Path(bench_dir)
    runs, missing = [], []
    errors: dict[str, dict[str, str]] = {}
    for config in sorted((bench_dir / "configs").glob("*/bench_clip/*.yaml")):
        label, clip = config.parent.parent.name, config.stem
        job = bench_dir / "runs" / label / clip
        clip_id = (OmegaConf.load(config).get("bench") or {}).get("clip_id", clip)
        if (
            RunDirectory.is_complete(job)
            and (job / "metrics.json").is_file()
            and (job / "config.yaml").is_file()
        ):
            recorded = OmegaConf.to_container(OmegaConf.load(job / "config.yaml"), resolve=False)
            metrics = json.loads((job / "metrics.json").read_text(encoding="utf-8"))
            runs.append(BenchRun(job, dict(recorded.get("bench") or {}), metrics))
        else:
            if label not in errors:
                errors[label] = job_errors(bench_dir, label)
            error = errors[label].get(clip)
            state = f"started, not finished (see {job / 'run.log'})" if job.is_dir() else "not started"
            missing.append(f"{label} on {clip_id}: {state}" + (f": error: {error}" if error else ""))
    return runs, missing


def edit_rows(runs: Sequence[BenchRun]) -> list[dict[str, Any]]:
    """One row per edit: method, backbone, clip, suite edit name and kind, seed, every metric, cost."""
    references: dict[tuple[str, str], BenchRun] = {
        (r.bench.get("backbone"), r.clip): r for r in runs if r.bench.get("reference")
    }
    rows = []
    for run in runs:
        quality = run.metrics.get("quality") or {}
        scores = quality.get("edits") or {}
        suite_edits = run.bench.get("edits") or []
        ref = references.get((run.bench.get("backbone"), run.clip))
        latency, memory = run.latency(), run.peak_memory_gib()
        ref_latency = ref.latency() if ref else None
        ref_memory = ref.peak_memory_gib() if ref else None
        for entry in run.metrics.get("edits") or []:
            name = str(entry.get("name"))
            match = _EDIT.match(name)
            index = int(match.group(1)) if match else None
            suite_edit = suite_edits[index] if index is not None and index < len(suite_edits) else {}
            row: dict[str, Any] = {
                "method": run.label,
                "backbone": run.bench.get("backbone"),
                "reference": bool(run.bench.get("reference")),
                "clip": run.clip,
                "edit": suite_edit.get("name", name),
                "kind": suite_edit.get("kind"),
                "seed": entry.get("seed"),
                "prompt": entry.get("prompt"),
            }
            row.update({k: (scores.get(name) or {}).get(k) for k in EDIT_METRICS})
            row["reconstruction_psnr"] = run.reconstruction_psnr()
            row["edit_s"] = entry.get("seconds")
            row["latency_s"] = latency
            row["peak_memory_gib"] = memory
            row["latency_rel"] = latency / ref_latency if latency and ref_latency else None
            row["memory_rel"] = memory / ref_memory if memory and ref_memory else None
            rows.append(row)
    return rows


def _stats(values: Sequence[Any]) -> tuple[float | None, float | None]:
    data = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(float(v))]
    if not data:
        return None, None
    return float(np.mean(data)), (float(np.std(data, ddof=1)) if len(data) > 1 else None)


def summarize(rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per method label: ``n``, mean and std over edits of each metric; cost over clips (one value per run)."""
    out = []
    for label in labels:
        members = [r for r in rows if r["method"] == label]
        if not members:
            continue
        item: dict[str, Any] = {
            "method": label,
            "backbone": members[0]["backbone"],
            "reference": members[0]["reference"],
            "clips": len({r["clip"] for r in members}),
            "n": len(members),
        }
        for key in (*EDIT_METRICS, "edit_s"):
            item[key], item[f"{key}_std"] = _stats([r.get(key) for r in members])
        per_clip: dict[str, Mapping[str, Any]] = {}
        for r in members:
            per_clip.setdefault(r["clip"], r)
        for key in ("reconstruction_psnr", *COST_METRICS):
            item[key], item[f"{key}_std"] = _stats([r.get(key) for r in per_clip.values()])
        out.append(item)
    return out


def unavailable(runs: Sequence[BenchRun]) -> dict[str, dict[str, int]]:
    """``{metric: {reason: number of runs}}`` for every metric some run could not compute."""
    out: dict[str, dict[str, int]] = {}
    for run in runs:
        records = (run.metrics.get("quality") or {}).get("metrics") or {}
        for key, record in records.items():
            reason = record.get("unavailable") if isinstance(record, Mapping) else None
            if reason:
                out.setdefault(key, {})
                out[key][reason] = out[key].get(reason, 0) + 1
    return out


def _plot(summary: Sequence[Mapping[str, Any]], keys: Sequence[str], path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(isinstance(s.get(k), float) for s in summary)]
    if not keys:
        return None
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.4 * rows), squeeze=False)
    labels = [str(s["method"]) for s in summary]
    for ax, key in zip(axes.flat, keys):
        values = [s.get(key) if isinstance(s.get(key), float) else np.nan for s in summary]
        errors = [s.get(f"{key}_std") or 0.0 for s in summary]
        colors = ["tab:gray" if s.get("reference") else "tab:blue" for s in summary]
        ax.bar(range(len(summary)), values, yerr=errors, capsize=3, color=colors)
        ax.set_xticks(range(len(summary)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(axis_label(key), fontsize=8)
        ax.set_title(METRICS[key].label if key in METRICS else key, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title + " (grey: reference = plain sampling)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


@dataclass
class Leaderboard:
    """What :func:`build_leaderboard` wrote."""

    out_dir: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    missing: list[str]
    unavailable: dict[str, dict[str, int]]
    files: dict[str, Path]


def build_leaderboard(
    bench_dir: str | Path, out: str | Path | None = None, plots: bool = True
) -> Leaderboard:
    """Aggregate a bench folder (see the module docstring); works on a partial bench (missing jobs listed)."""
    bench_dir = Path(bench_dir)
    out_dir = Path(out) if out else bench_dir / "leaderboard"
    runs, missing = collect(bench_dir)
    labels = list(
        dict.fromkeys(r.label for r in sorted(runs, key=lambda r: (bool(r.bench.get("reference")), r.label)))
    )
    rows = edit_rows(runs)
    summary = summarize(rows, labels)
    skipped = unavailable(runs)
    metric_keys = [k for k in EDIT_METRICS if any(s.get(k) is not None for s in summary)]
    present = [k for k in ("reconstruction_psnr",) if any(s.get(k) is not None for s in summary)]
    cost = [k for k in COST_METRICS if any(s.get(k) is not None for s in summary)]
    columns = ["method", "backbone", "clips", "n"]
    for key in (*metric_keys, *present, *cost):
        columns += [key, f"{key}_std"]
    edit_columns = [
        "method",
        "backbone",
        "clip",
        "edit",
        "kind",
        "seed",
        *metric_keys,
        *present,
        "edit_s",
        *cost,
        "prompt",
    ]
    files = {
        "edits_csv": write_csv(out_dir / "edits.csv", rows, edit_columns),
        "leaderboard_csv": write_csv(out_dir / "leaderboard.csv", summary, columns),
    }
    name = str(runs[0].bench.get("name")) if runs and runs[0].bench.get("name") else bench_dir.name
    shown = []
    for s in summary:
        item = {k: s.get(k) for k in ("method", "backbone", "clips", "n")}
        for key in (*metric_keys, *present, *cost):
            mean, std = s.get(key), s.get(f"{key}_std")
            item[key] = (
                None if mean is None else (f"{mean:.4g} ± {std:.2g}" if std is not None else f"{mean:.4g}")
            )
        if s.get("reference"):
            item["method"] = f"{s['method']} (reference)"
        shown.append(item)
    header = [f"{k} ({'↑' if METRICS[k].higher_is_better else '↓'})" for k in (*metric_keys, *present, *cost)]
    table_rows = [
        {
            **{c: r.get(c) for c in ("method", "backbone", "clips", "n")},
            **dict(zip(header, [r.get(k) for k in (*metric_keys, *present, *cost)])),
        }
        for r in shown
    ]
    text = [
        f"# Leaderboard: {name}",
        "",
        f"{len(runs)} finished runs, {len(rows)} edits, {len(summary)} methods. Mean ± standard deviation over edits "
        "(cost: over clips). ↑ higher is better, ↓ lower is better. Cost relative to the backbone's reference "
        "method (plain sampling) on the same clip.",
        "",
        markdown_table(table_rows, ["method", "backbone", "clips", "n", *header]),
        "",
    ]
    if missing:
        text += [f"## Missing jobs ({len(missing)})", "", *[f"- {m}" for m in missing], ""]
    absent = [k for k in EDIT_METRICS if k not in metric_keys] + (
        ["reconstruction_psnr"] if not present else []
    )
    if skipped or absent:
        text += ["## Unavailable metrics", ""]
        for key in dict.fromkeys([*skipped, *absent]):
            reasons = skipped.get(key) or {}
            if reasons:
                text += [f"- `{key}`: " + "; ".join(f"{why} ({n} runs)" for why, n in reasons.items())]
            elif key == "reconstruction_psnr":
                text += ["- `reconstruction_psnr`: not recorded by these runs (quality.reconstruction)"]
            else:
                text += [f"- `{key}`: not computed by these runs"]
        text.append("")
    text += [
        "## Definitions",
        "",
        markdown_table(
            [
                {
                    "metric": k,
                    "definition": METRICS[k].definition,
                    "source": METRICS[k].source,
                    "direction": METRICS[k].direction,
                }
                for k in (*EDIT_METRICS, "reconstruction_psnr", *COST_METRICS)
            ],
            ["metric", "definition", "source", "direction"],
        ),
        "",
    ]
    if plots:
        for key, keys, title in (("metrics", [*metric_keys, *present], "quality"), ("cost", cost, "cost")):
            path = _plot(summary, keys, out_dir / "plots" / f"{key}.png", f"{name}: {title}")
            if path is not None:
                files[f"plot:{key}"] = path
                text += [f"![{key}](plots/{path.name})", ""]
    files["markdown"] = write_text(out_dir / "leaderboard.md", "\n".join(text))
    return Leaderboard(out_dir, rows, summary, missing, skipped, files)
