"""``videoedit bench``: every method on every clip and prompt of a suite, through Hydra multirun, resumable.

A bench is described by a spec (``configs/bench/<name>.yaml`` or any YAML file; keys = :class:`BenchSpec`)::

    suite: synthetic                  # tgve | v2vbench | five | videograin | synthetic
    suite_root: null                  # the downloaded dataset folder (tgve, v2vbench, five)
    backbones:                        # per backbone family: its model config, its plain-sampling reference
      sd: {model: tiny, reference: sample, overrides: [data.height=64]}   # method, the data sizes it takes
      wan: {model: wan_tiny, reference: sample, overrides: [data.num_frames=5], reference_overrides: []}
    methods:                          # label -> the method config and its backbone, plus its own overrides
      videograin: {overrides: [method.chunk_budget_mb=64]}
      flowedit: {backbone: wan, overrides: [method.n_max=2]}
    overrides: [method.num_inference_steps=2]   # every job

For each method label the bench writes one Hydra config per clip (``<out>/configs/<label>/bench_clip/<clip>.yaml``:
the clip's data config group and keys, its prompts, the backbone's model, the method, the overrides and a
``bench`` block naming suite, clip, method and edits) and runs one multirun over them::

    <python> -m videoedit.run -m hydra.searchpath=[file://<out>/configs/<label>] +bench_clip=<clip 1>,<clip 2>,... \\
        hydra.sweep.dir=<out>/runs/<label> hydra.sweep.subdir=${bench.clip} [your Hydra args]

so every launcher works (``hydra/launcher=slurm ...`` after ``--``), and running the same bench again into
the same ``--out`` skips finished jobs (``videoedit/sweeps.py``: same config = skipped, a changed config is an
error unless ``force=true``). Precedence of settings: the clip < the backbone < the method < ``overrides``.
The reference method of each backbone used (plain sampling, ``method=sample``) runs on every clip too, as the
label ``<reference>-<backbone>`` (``sample-sd``, ``sample-wan``) with the backbone's ``reference_overrides``:
the leaderboard divides each method's latency and peak memory by the reference's on the same clip
(``videoedit/suites/leaderboard.py``). Each method must run on its backbone's family (the method class's
``backbones``, the model class's ``family``): a wrong pair stops the bench before any job.
Inversions are not cached across methods by default (``cache_inversion: false``): each method pays for its own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from videoedit.config import CONFIG_DIR
from videoedit.errors import ConfigError, InputError
from videoedit.io.atomic import write_text
from videoedit.suites import Suite, SuiteClip, load_suite

logger = logging.getLogger(__name__)

# config groups a bench override may select (`key=value` with no dot); annotator lives under _global_
_GROUP_PATHS = {"annotator": "annotator@_global_.annotator"}


def config_groups(config_dir: Path = CONFIG_DIR) -> set[str]:
    """The config groups of the project (``model``, ``data``, ``method``, ``controlnet``, ``annotator``...)."""
    return {
        p.name
        for p in Path(config_dir).iterdir()
        if p.is_dir() and p.name not in ("hydra", "experiment", "bench")
    }


@dataclass
class BackboneSpec:
    """One backbone family of a bench.

    Attributes:
        model: its model config (``configs/model/<model>.yaml``: ``sd15``, ``tiny``, ``wan_tiny``...).
        reference: the method config whose cost is the unit of this backbone's relative cost (``sample``:
            plain sampling with the same steps on the same clip); it runs as the label ``<reference>-<name>``.
        overrides: Hydra-style overrides for every job on this backbone (e.g. the frame sizes it takes).
        reference_overrides: overrides for the reference's jobs only (e.g. Wan's own guidance scale).
    """

    model: str
    reference: str
    overrides: list[str] = field(default_factory=list)
    reference_overrides: list[str] = field(default_factory=list)


@dataclass
class MethodSpec:
    """One row of the leaderboard: a method config on a backbone, with its own overrides.

    Attributes:
        label: the row's name (several labels may run the same method with other settings).
        method: the method config (``configs/method/<method>.yaml``); default: the label.
        backbone: the backbone it runs on.
        overrides: Hydra-style overrides for this method's jobs.
    """

    label: str
    method: str
    backbone: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class BenchSpec:
    """What to run (see the module docstring)."""

    name: str
    suite: str
    backbones: dict[str, BackboneSpec]
    methods: dict[str, MethodSpec]
    suite_root: str | None = None
    suite_options: dict[str, Any] = field(default_factory=dict)
    clips: list[str] | None = None
    edits: list[str] | None = None
    max_clips: int | None = None
    sample_seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    cache_inversion: bool = False

    def reference_label(self, backbone: str) -> str:
        """The label of ``backbone``'s reference runs: ``<reference method>-<backbone>`` (``sample-sd``)."""
        return f"{self.backbones[backbone].reference}-{backbone}"

    @property
    def labels(self) -> list[str]:
        """Every method label to run: the methods, then the reference of each backbone they use."""
        used = dict.fromkeys(m.backbone for m in self.methods.values())
        return [*self.methods, *(self.reference_label(b) for b in used)]

    def method(self, label: str) -> MethodSpec:
        """The spec of ``label`` (a reference label runs the backbone's reference with its reference_overrides)."""
        if label in self.methods:
            return self.methods[label]
        for name, backbone in self.backbones.items():
            if label == self.reference_label(name):
                return MethodSpec(label, backbone.reference, name, list(backbone.reference_overrides))
        raise KeyError(label)

    def is_reference(self, label: str) -> bool:
        return label not in self.methods and label in {self.reference_label(b) for b in self.backbones}


def _as_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{what} must be a list of Hydra overrides (key=value), got {value!r}")
    return [str(v) for v in value]


def parse_spec(node: Mapping[str, Any], name: str = "bench") -> BenchSpec:
    """A :class:`BenchSpec` from a mapping (a bench YAML file); says which key is wrong.

    Raises:
        ConfigError: unknown keys, no methods, a method on an unknown backbone, a backbone without model/reference.
    """
    node = dict(node)
    known = {
        "suite",
        "suite_root",
        "suite_options",
        "clips",
        "edits",
        "max_clips",
        "backbones",
        "methods",
        "sample_seeds",
        "overrides",
        "cache_inversion",
        "name",
    }
    unknown = sorted(set(node) - known)
    if unknown:
        raise ConfigError(f"bench spec: unknown keys {unknown}; keys: {sorted(known)}")
    if not node.get("suite"):
        raise ConfigError("bench spec: `suite` is missing (tgve | v2vbench | five | videograin | synthetic)")
    backbones = {}
    for key, value in (node.get("backbones") or {}).items():
        value = dict(value or {})
        if not value.get("model") or not value.get("reference"):
            raise ConfigError(
                f"bench spec: backbones.{key} needs `model` (a model config) and `reference` (a method)"
            )
        extra = sorted(set(value) - {"model", "reference", "overrides", "reference_overrides"})
        if extra:
            raise ConfigError(
                f"bench spec: backbones.{key} has unknown keys {extra} (model, reference, overrides, reference_overrides)"
            )
        backbones[str(key)] = BackboneSpec(
            str(value["model"]),
            str(value["reference"]),
            _as_list(value.get("overrides"), f"backbones.{key}.overrides"),
            _as_list(value.get("reference_overrides"), f"backbones.{key}.reference_overrides"),
        )
    if not backbones:
        raise ConfigError("bench spec: `backbones` is empty: give e.g. {sd: {model: sd15, reference: ddim}}")
    methods = {}
    for label, value in (node.get("methods") or {}).items():
        value = dict(value or {})
        extra = sorted(set(value) - {"method", "backbone", "overrides"})
        if extra:
            raise ConfigError(
                f"bench spec: methods.{label} has unknown keys {extra} (method, backbone, overrides)"
            )
        backbone = str(value.get("backbone") or next(iter(backbones)))
        if backbone not in backbones:
            raise ConfigError(
                f"bench spec: methods.{label}.backbone={backbone} is not one of the backbones {sorted(backbones)}"
            )
        if any(str(label) == f"{b.reference}-{name}" for name, b in backbones.items()):
            raise ConfigError(
                f"bench spec: methods.{label}: the label is taken by a backbone's reference runs"
            )
        methods[str(label)] = MethodSpec(
            str(label),
            str(value.get("method") or label),
            backbone,
            _as_list(value.get("overrides"), f"methods.{label}.overrides"),
        )
    if not methods:
        raise ConfigError("bench spec: `methods` is empty: give at least one method label")
    seeds = node.get("sample_seeds") or [0]
    return BenchSpec(
        name=str(node.get("name") or name),
        suite=str(node["suite"]),
        backbones=backbones,
        methods=methods,
        suite_root=node.get("suite_root"),
        suite_options=dict(node.get("suite_options") or {}),
        clips=[str(c) for c in node["clips"]] if node.get("clips") else None,
        edits=[str(e) for e in node["edits"]] if node.get("edits") else None,
        max_clips=int(node["max_clips"]) if node.get("max_clips") is not None else None,
        sample_seeds=[int(s) for s in seeds],
        overrides=_as_list(node.get("overrides"), "overrides"),
        cache_inversion=bool(node.get("cache_inversion", False)),
    )


def load_spec(config: str, changes: Sequence[str] = ()) -> BenchSpec:
    """The spec ``configs/bench/<config>.yaml`` (or the YAML file ``config``), with ``key=value`` changes.

    Raises:
        InputError: no such spec (with the shipped names).
    """
    path = Path(config).expanduser()
    if not path.is_file():
        path = CONFIG_DIR / "bench" / f"{config}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in (CONFIG_DIR / "bench").glob("*.yaml"))
        raise InputError(f"no bench spec {config!r}: give a YAML file or one of {', '.join(shipped)}")
    node = OmegaConf.load(path)
    if changes:
        node = OmegaConf.merge(node, OmegaConf.from_dotlist(list(changes)))
    return parse_spec(OmegaConf.to_container(node, resolve=True), name=path.stem)


def split_overrides(overrides: Sequence[str], groups: set[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Hydra-style overrides -> ``(group choices, nested values)``.

    ``controlnet=none`` (a config group) is a group choice; ``method.batch_size=2`` a value (parsed as YAML).

    Raises:
        ConfigError: ``hydra.*`` (give those after ``--``) or a deletion (``~key``).
    """
    choices: dict[str, str] = {}
    values: list[str] = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+")
        if not sep or key.startswith("~"):
            raise ConfigError(f"bench override {item!r}: expected key=value")
        if key.startswith("hydra.") or key.startswith("hydra/"):
            raise ConfigError(f"bench override {item!r}: Hydra settings go after `--` on the command line")
        if key in groups:
            choices[_GROUP_PATHS.get(key, key)] = value
        else:
            values.append(f"{key}={value}")
    return choices, OmegaConf.to_container(OmegaConf.from_dotlist(values)) if values else {}


def job_config(spec: BenchSpec, label: str, clip: SuiteClip, groups: set[str]) -> dict[str, Any]:
    """The Hydra config (``# @package _global_``) of one job: method ``label`` on ``clip``."""
    method = spec.method(label)
    backbone = spec.backbones[method.backbone]
    choices: dict[str, str] = {"model": backbone.model, "data": clip.data_group, "method": method.method}
    values = OmegaConf.create({"data": dict(clip.data), **dict(clip.config)})
    clip_choices = {_GROUP_PATHS.get(k, k): v for k, v in clip.groups.items()}
    if method.method in clip.method_config:
        values = OmegaConf.merge(values, {"method": dict(clip.method_config[method.method])})
    layers = [(clip_choices, {})]
    for overrides in (backbone.overrides, method.overrides, spec.overrides):
        layers.append(split_overrides(overrides, groups))
    for layer_choices, layer_values in layers:
        choices.update(layer_choices)
        values = OmegaConf.merge(values, layer_values)
    annotator = _GROUP_PATHS["annotator"]
    if annotator in choices and not _has_annotator(choices.get("controlnet")):
        del choices[annotator]  # e.g. controlnet=none: no condition, so no annotator to choose
    body = OmegaConf.to_container(values)
    prompts = [e.prompt if isinstance(e.prompt, str) else list(e.prompt) for e in clip.edits]
    return {
        "defaults": [{f"override /{k}": v} for k, v in choices.items()],
        "experiment_name": f"bench_{spec.name}",
        **body,
        "prompts": prompts,
        "sample_seeds": list(spec.sample_seeds),
        "cache_inversion": spec.cache_inversion,
        "bench": {
            "name": spec.name,
            "suite": spec.suite,
            "clip": clip.slug,
            "clip_id": clip.id,
            "label": label,
            "method": method.method,
            "backbone": method.backbone,
            "reference": spec.is_reference(label),
            "edits": [{"name": e.name, "kind": e.kind} for e in clip.edits],
        },
    }


def _has_annotator(controlnet: str | None) -> bool:
    """Whether the ControlNet config ``controlnet`` (``None``: the primary config's) selects an annotator."""
    if controlnet is None:
        return True
    path = CONFIG_DIR / "controlnet" / f"{controlnet}.yaml"
    if not path.is_file():
        return True  # an unknown choice: Hydra reports it
    defaults = OmegaConf.load(path).get("defaults") or []
    return any(
        "annotator" in str(k)
        for entry in defaults
        for k in (entry if isinstance(entry, dict) else {entry: 0})
    )


@dataclass
class Bench:
    """A bench ready to run: its spec, suite (after ``select``), output folder and config groups."""

    spec: BenchSpec
    suite: Suite
    out: Path
    groups: set[str]

    def config_dir(self, label: str) -> Path:
        return self.out / "configs" / label

    def runs_dir(self, label: str) -> Path:
        return self.out / "runs" / label

    def job_dir(self, label: str, clip: SuiteClip) -> Path:
        return self.runs_dir(label) / clip.slug

    def write_configs(self) -> list[Path]:
        """Write every job's config (rewritten each time: identical for an unchanged bench). Configs of clips no
        longer selected are removed for the labels of this bench (their finished runs stay on disk)."""
        written = []
        slugs = {c.slug for c in self.suite.clips}
        for label in self.spec.labels:
            for stale in (self.config_dir(label) / "bench_clip").glob("*.yaml"):
                if stale.stem not in slugs:
                    stale.unlink()
            for clip in self.suite.clips:
                node = job_config(self.spec, label, clip, self.groups)
                path = self.config_dir(label) / "bench_clip" / f"{clip.slug}.yaml"
                write_text(path, "# @package _global_\n" + OmegaConf.to_yaml(OmegaConf.create(node)))
                written.append(path)
        return written

    def command(self, label: str, hydra_args: Sequence[str] = ()) -> list[str]:
        """The multirun command of method ``label`` over every clip."""
        clips = ",".join(c.slug for c in self.suite.clips)
        return [
            *entry_command(),
            "-m",
            f"hydra.searchpath=[file://{self.config_dir(label).resolve()}]",
            f"+bench_clip={clips}",
            f"hydra.sweep.dir={self.runs_dir(label).resolve()}",
            "hydra.sweep.subdir=${bench.clip}",
            *hydra_args,
        ]

    def run(self, hydra_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> dict[str, int]:
        """Run every method label's multirun (one after the other); returns each one's exit status."""
        self.write_configs()
        status = {}
        for label in self.spec.labels:
            cmd = self.command(label, hydra_args)
            logger.info("bench %s: %s", label, " ".join(cmd))
            print(f"[bench] {label}: {len(self.suite.clips)} clips -> {self.runs_dir(label)}", flush=True)
            status[label] = subprocess.run(
                cmd, env=dict(env) if env is not None else None, check=False
            ).returncode
            if status[label] != 0:
                print(
                    f"[bench] {label}: exit status {status[label]} (the leaderboard lists its missing jobs)",
                    flush=True,
                )
        return status


def entry_command() -> list[str]:
    """How a bench starts a Hydra run: ``python -m videoedit.run`` (the entry point behind ``run.py`` and
    ``videoedit run``), with this interpreter: works from a checkout and from an installed wheel."""
    return [sys.executable, "-m", "videoedit.run"]


def check_methods(spec: BenchSpec) -> None:
    """Every method and model config of the spec exists, and each method runs on its backbone's family (the
    method class's ``backbones``, the model class's ``family``); nothing is loaded.

    Raises:
        ConfigError: naming the label, the config and what to change.
    """
    for label in spec.labels:
        method = spec.method(label)
        if not (CONFIG_DIR / "method" / f"{method.method}.yaml").is_file():
            raise ConfigError(
                f"bench: method {method.method!r} (label {label}) has no configs/method/{method.method}.yaml"
            )
    for name, backbone in spec.backbones.items():
        if not (CONFIG_DIR / "model" / f"{backbone.model}.yaml").is_file():
            raise ConfigError(
                f"bench: backbones.{name}.model={backbone.model} has no configs/model/{backbone.model}.yaml"
            )
    for label in spec.labels:
        method = spec.method(label)
        model = spec.backbones[method.backbone].model
        family = _config_class_attr("model", model, "family")
        supported = _config_class_attr("method", method.method, "backbones")
        if family and supported is not None and family not in tuple(supported):
            raise ConfigError(
                f"bench: method {method.method} (label {label}) does not run on backbones.{method.backbone} "
                f"(model {model}, family '{family}'): it runs on {', '.join(supported)}. Give it another "
                "`backbone:` in the spec."
            )


def prepare(spec: BenchSpec, out: str | Path, check: bool = True) -> Bench:
    """Load and select the suite, check its files, that the spec's methods/models exist and that each method
    runs on its backbone's family (no model is loaded).

    Raises:
        SuiteDataError: the suite's files are missing (each named).
        ConfigError: a method or model config that does not exist; a method on a family it does not support.
    """
    if spec.suite in ("tgve", "v2vbench", "five") and not spec.suite_root:
        raise InputError(
            f"the {spec.suite} suite runs on your downloaded copy of its videos: give its folder "
            "(--suite-root <folder>; docs/metrics.md says where to get it)"
        )
    suite = load_suite(spec.suite, spec.suite_root, **spec.suite_options).select(
        spec.clips, spec.edits, spec.max_clips
    )
    if not suite.clips:
        raise InputError(f"the {suite.title} selection is empty: check clips/edits/max_clips")
    check_methods(spec)
    if check:
        suite.check()
    return Bench(spec, suite, Path(out), config_groups())


def _config_class_attr(group: str, name: str, attr: str) -> Any:
    """``attr`` of the class a config's ``_target_`` names (``model/tiny.yaml`` -> ``family``), following the
    config's defaults list (``flowedit_layout`` extends ``flowedit``); ``None`` when it cannot be found."""
    from hydra.utils import get_class

    path = CONFIG_DIR / group / f"{name}.yaml"
    seen = set()
    while path.is_file() and path not in seen:
        seen.add(path)
        node = OmegaConf.load(path)
        target = node.get("_target_")
        if target:
            try:
                return getattr(get_class(str(target)), attr, None)
            except Exception:  # a target that does not import is reported by the run itself
                return None
        parents = [d for d in (node.get("defaults") or []) if isinstance(d, str) and d != "_self_"]
        if not parents:
            return None
        path = CONFIG_DIR / group / f"{parents[0]}.yaml"
    return None


def default_out(spec: BenchSpec) -> Path:
    """``<output root>/bench/<spec name>`` (``VIDEOEDIT_OUTPUT_ROOT``, default ``outputs``)."""
    return Path(os.environ.get("VIDEOEDIT_OUTPUT_ROOT") or "outputs") / "bench" / spec.name
