"""The official VideoGrain example configs, ported to ``configs/experiment/videograin_*.yaml``.

Each experiment must compose, target the VideoGrain method, give at most one local prompt per region, and
have every local prompt inside its full prompt as a token subsequence (the real CLIP tokenizer), unless
``method.skip_missing_local_prompts`` says the official run ignored one (and then one really is missing).
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from videoedit.config import CONFIG_DIR
from videoedit.errors import PromptError
from videoedit.layout.prompts import locate_local_prompts

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("videograin_*.yaml"))


def _edits(cfg) -> list[tuple[str, list[str]]]:
    """``[(full_prompt, [local prompts...]), ...]`` of the composed config's ``prompts``."""
    edits = []
    for entry in OmegaConf.to_container(cfg.prompts, resolve=True):
        entry = [entry] if isinstance(entry, str) else list(entry)
        edits.append((entry[0], entry[1:]))
    return edits


def test_every_official_example_is_ported():
    # 5 class-level, 14 instance-level and 10 part-level configs ship in the official config/ tree.
    levels = [name.split("_")[1] for name in EXPERIMENTS]
    assert (levels.count("class"), levels.count("instance"), levels.count("part")) == (5, 14, 10)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_videograin_experiment(compose, tokenizer, experiment):
    cfg = compose(f"+experiment={experiment}")
    OmegaConf.resolve(cfg)
    assert cfg.method._target_ == "videoedit.methods.videograin.VideoGrainMethod"
    assert cfg.experiment_name == experiment.removeprefix("videograin_")
    assert cfg.data._target_ == "videoedit.data.source.VideoClip"
    assert cfg.data.path.startswith(f"{cfg.paths.data_root}/videograin/")
    assert cfg.data.masks_dir.startswith(f"{cfg.paths.data_root}/videograin/")
    assert cfg.controlnet.condition_type in ("openpose", "depth")
    assert cfg.sample_seeds == [0] and cfg.seed == 42

    regions = list(cfg.data.regions)
    assert regions and len(set(regions)) == len(regions)
    skip = bool(cfg.method.skip_missing_local_prompts)
    missing = []
    for full, local in _edits(cfg):
        assert len(local) <= len(regions), f"{len(local)} local prompts for regions {regions}"
        layout = locate_local_prompts(tokenizer, full, local, skip_missing=skip)  # raises when one is missing
        missing += [p for p, span in zip(local, layout.spans, strict=True) if p.strip() and span is None]
    # The switch is set only where the official run silently dropped a local prompt.
    assert bool(missing) == skip, f"skip_missing_local_prompts={skip} but missing local prompts: {missing}"


def test_skip_flag_is_needed_where_set(compose, tokenizer):
    """The official vis-weight config's local prompt 'man' is inside the single token 'Spiderman'."""
    cfg = compose("+experiment=videograin_instance_run_two_man_3cls_spider_polar_vis_weight")
    assert cfg.method.skip_missing_local_prompts
    ((full, local),) = _edits(cfg)
    with pytest.raises(PromptError, match=r"Local prompt 1 'man' is not part of the full prompt"):
        locate_local_prompts(tokenizer, full, local)
    spans = locate_local_prompts(tokenizer, full, local, skip_missing=True).spans
    assert spans[0] is None and spans[1] is not None and spans[2] is not None and spans[3] is None
