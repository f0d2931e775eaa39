"""``videoedit``: run edits, and work on finished result trees.

::

    videoedit run <Hydra overrides> [-m] [--config-dir DIR]     (= run.py; see videoedit/run.py)
    videoedit metrics <run or sweep folder>... [--clip-model ...] [--flow-backend dis|raft|auto] [...]
    videoedit report <sweep folder> [--out DIR] [--edit NAME] [--frames 4] [--max-columns 8]
    videoedit compare <run folder>... --labels A B ... --out DIR [--edit NAME]
    videoedit bench [--config synthetic] [--suite-root DIR] [--methods a,b] [--set key=value]... [--out DIR] [-- hydra args]

``metrics`` (re)computes the quality metrics of finished runs and merges them into each
``metrics.json`` under ``"quality"``, with each run's recorded ``metrics`` settings (its
``config.yaml``) and the flags given on top; ``report`` aggregates a sweep into tables, plots and a comparison
grid; ``compare`` builds a labelled grid/video of source | run A | run B from runs of separate commands;
``bench`` runs methods x suite clips x prompts through Hydra multirun (resumable) and writes a leaderboard
(``videoedit/suites/bench.py``, ``videoedit/suites/leaderboard.py``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videoedit.errors import VideoEditError


def _recorded_metrics_block(run: Path) -> dict[str, Any]:
    """The ``metrics`` block of a run's recorded ``config.yaml`` (``{}`` without one)."""
    from omegaconf import OmegaConf

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    block = OmegaConf.to_container(OmegaConf.load(path), resolve=True).get("metrics")
    if not isinstance(block, dict):
        return {}
    from videoedit.metrics.evaluate import Evaluator

    known = inspect.signature(Evaluator).parameters  # a run of another version may have other keys
    dropped = sorted(k for k in block if k not in known)
    if dropped:
        logging.getLogger(__name__).warning("%s: ignoring unknown metrics settings %s", run, dropped)
    return {k: v for k, v in block.items() if k in known}


def _metrics(args: argparse.Namespace) -> int:
    from videoedit.metrics.evaluate import Evaluator, evaluate_run, find_runs

    flags = {
        "clip_model": args.clip_model,
        "pickscore_model": args.pickscore_model,
        "allow_download": True if args.allow_download else None,
        "flow_backend": args.flow_backend,
        "raft_weights": args.raft_weights,
        "lpips_net": args.lpips_net,
        "lpips_weights": args.lpips_weights,
        "background_protocol": args.background_protocol,
        "device": args.device,
        "flow_cache_dir": args.flow_cache_dir,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    runs = [run for root in args.paths for run in find_runs(root)]
    if not runs:
        raise VideoEditError(
            f"No finished run under {', '.join(args.paths)} (a run folder has metrics.json and COMPLETE)."
        )
    evaluators: dict[str, Evaluator] = {}  # one per distinct setting (CLIP is loaded once)
    for run in runs:
        # the run's own metrics settings, the command's flags on top (metrics are wanted: enabled)
        settings = {**_recorded_metrics_block(run), **given, "enabled": True}
        key = json.dumps(settings, sort_keys=True, default=str)
        if key not in evaluators:
            evaluators[key] = Evaluator.from_config(settings)
            evaluators[key].check()
        quality = evaluate_run(run, evaluators[key], write=not args.dry_run)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in (quality.get("mean") or {}).items())
        print(f"{run}: {shown or 'no metric'}")
        for what, why in (quality.get("skipped") or {}).items():
            print(f"  skipped {what}: {why}")
        for what, why in (quality.get("errors") or {}).items():
            print(f"  error {what}: {why}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from videoedit.reports import build_report

    report = build_report(
        args.sweep_dir,
        out=args.out,
        edit=args.edit,
        num_frames=args.frames,
        max_columns=args.max_columns,
        plots=not args.no_plots,
        grid=not args.no_grid,
    )
    print(f"{len(report.rows)} edits from {args.sweep_dir}; swept: {', '.join(report.swept) or 'nothing'}")
    for name, path in report.files.items():
        print(f"  {name}: {path}")
    for line in report.missing:  # jobs of the sweep without a finished run
        print(f"  missing: {line}")
    for line in report.warnings:
        print(f"  warning: {line}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from videoedit.reports import build_comparison

    labels = args.labels or [Path(p).name for p in args.runs]
    files = build_comparison(
        [Path(p) for p in args.runs], labels, Path(args.out), args.edit, args.frames, args.fps, args.name
    )
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def _run(argv: Sequence[str]) -> int:
    """``videoedit run ...``: every argument goes to Hydra, exactly as ``run.py`` takes them."""
    from videoedit.run import main as run_main

    run_main(argv)
    return 0


RUN_HELP = """Run an edit (or a sweep with -m) from the packaged configs, exactly like run.py:

  videoedit run +experiment=instance_edit model=tiny data=two_figures
  videoedit run -m +experiment=instance_edit model=tiny data=two_figures method.guidance_scale=5,7.5
  videoedit run --config-dir my_configs +experiment=my_edit     (your configs, laid out like configs/)
  accelerate launch -m videoedit run +experiment=instance_edit  (several processes)

Every argument is a Hydra override or flag; `videoedit run --help` lists the config groups."""


def _bench(args: argparse.Namespace) -> int:
    from videoedit.suites.bench import default_out, load_spec, prepare
    from videoedit.suites.leaderboard import build_leaderboard

    changes = list(args.set or [])
    for flag, key in ((args.suite, "suite"), (args.suite_root, "suite_root"), (args.max_clips, "max_clips")):
        if flag is not None:
            changes.append(f"{key}={flag}")
    for flag, key in ((args.clips, "clips"), (args.edits, "edits"), (args.seeds, "sample_seeds")):
        if flag:
            changes.append(f"{key}=[{flag}]")
    spec = load_spec(args.config, changes)
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in spec.methods]
        if unknown:
            raise VideoEditError(
                f"--methods {','.join(unknown)}: not in the spec's methods {sorted(spec.methods)}"
            )
        spec.methods = {k: v for k, v in spec.methods.items() if k in wanted}
    out = Path(args.out) if args.out else default_out(spec)
    hydra_args = [a for a in args.hydra_args if a != "--"]
    if not args.leaderboard_only:
        bench = prepare(spec, out)
        jobs = len(spec.labels) * len(bench.suite.clips)
        print(
            f"bench {spec.name}: {bench.suite.title}, {len(bench.suite.clips)} clips, {bench.suite.num_edits} edits "
            f"x {len(spec.sample_seeds)} seeds; methods {', '.join(spec.labels)} ({jobs} jobs) -> {out}"
        )
        if args.dry_run:
            bench.write_configs()
            for label in spec.labels:
                print(" ".join(bench.command(label, hydra_args)))
            return 0
        status = bench.run(hydra_args)
    else:
        status = {}
    board = build_leaderboard(out)
    print(
        f"leaderboard: {len(board.summary)} methods, {len(board.rows)} edits, {len(board.missing)} missing jobs"
    )
    for name, path in board.files.items():
        print(f"  {name}: {path}")
    for line in board.missing:
        print(f"  missing: {line}")
    return 0 if all(code == 0 for code in status.values()) and not board.missing else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoedit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    # parsed by Hydra, not argparse (main() hands the arguments over); listed here for --help
    sub.add_parser(
        "run",
        help="run an edit or a sweep: videoedit run <Hydra overrides> (as run.py)",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )

    m = sub.add_parser("metrics", help="compute quality metrics of finished runs into their metrics.json")
    m.add_argument("paths", nargs="+", help="run folders, sweep folders or output roots (searched for runs)")
    # unset flags keep each run's recorded metrics settings (config.yaml "metrics"; defaults otherwise)
    m.add_argument(
        "--clip-model", default=None, help="<hub id or folder> | none (default: the run's own setting)"
    )
    m.add_argument("--pickscore-model", default=None, help="<hub id or folder> | none")
    m.add_argument("--allow-download", action="store_true", help="download hub ids missing from the HF cache")
    m.add_argument("--flow-backend", default=None, choices=["dis", "raft", "auto"])
    m.add_argument("--raft-weights", default=None)
    m.add_argument("--lpips-net", default=None, help="alex | vgg | squeeze | none")
    m.add_argument("--lpips-weights", default=None, help="the LPIPS backbone's torchvision state dict")
    m.add_argument("--background-protocol", default=None, choices=["outside", "pie_bench"])
    m.add_argument("--device", default=None, help="auto | cpu | cuda (default: the run's own setting)")
    m.add_argument("--flow-cache-dir", default=None)
    m.add_argument("--dry-run", action="store_true", help="print the metrics, do not write metrics.json")
    m.set_defaults(func=_metrics)

    r = sub.add_parser("report", help="tables, plots and a comparison grid of a sweep")
    r.add_argument("sweep_dir")
    r.add_argument("--out", default=None, help="output folder (default <sweep_dir>/report)")
    r.add_argument("--edit", default=None, help="edit shown in the comparison (default: each run's first)")
    r.add_argument("--frames", type=int, default=4, help="frames (rows) in the comparison grid")
    r.add_argument("--max-columns", type=int, default=8, help="runs shown in the comparison")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--no-grid", action="store_true")
    r.set_defaults(func=_report)

    c = sub.add_parser("compare", help="labelled grid/video: source | run A | run B ...")
    c.add_argument("runs", nargs="+", help="finished run folders (same source clip)")
    c.add_argument("--labels", nargs="+", default=None, help="one per run (default: folder names)")
    c.add_argument("--out", required=True)
    c.add_argument("--edit", default=None, help="edit name (default: each run's first)")
    c.add_argument("--frames", type=int, default=4)
    c.add_argument("--fps", type=float, default=8.0)
    c.add_argument("--name", default="comparison", help="file stem of the grid and video")
    c.set_defaults(func=_compare)

    b = sub.add_parser(
        "bench",
        help="methods x suite clips x prompts (Hydra multirun, resumable), then a leaderboard",
        description="Run a bench spec (configs/bench/<name>.yaml or a YAML file) and write <out>/leaderboard/. "
        "Hydra arguments (launcher, force=true) go after `--`.",
    )
    b.add_argument("--config", default="synthetic", help="a spec in configs/bench/ or a YAML file")
    b.add_argument("--suite", default=None, help="tgve | v2vbench | five | videograin | synthetic")
    b.add_argument("--suite-root", default=None, help="the suite's downloaded dataset folder")
    b.add_argument("--methods", default=None, help="comma-separated labels of the spec's methods to run")
    b.add_argument("--clips", default=None, help="comma-separated clip ids")
    b.add_argument("--edits", default=None, help="comma-separated edit names or kinds")
    b.add_argument("--max-clips", type=int, default=None)
    b.add_argument("--seeds", default=None, help="comma-separated sample seeds")
    b.add_argument("--set", action="append", default=None, help="key=value change of the spec (repeatable)")
    b.add_argument(
        "--out",
        default=None,
        help="bench folder (default <output root>/bench/<spec name>); reuse it to resume",
    )
    b.add_argument("--dry-run", action="store_true", help="write the job configs, print the commands")
    b.add_argument("--leaderboard-only", action="store_true", help="rebuild the leaderboard of --out")
    b.add_argument(
        "hydra_args", nargs="*", help="after --: Hydra overrides for every job (hydra/launcher=...)"
    )
    b.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return _run(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except VideoEditError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
