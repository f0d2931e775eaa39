"""The 29 official VideoGrain example configs (``configs/experiment/videograin_*.yaml``) as a suite.

Each experiment becomes a clip: its data block (clip, layout masks, regions, frames), its layout prompts
``[full prompt, local prompt per region...]``, its ControlNet and annotator, negative prompt and seed. Its
``method`` block (the official VideoGrain settings) is used when the method is VideoGrain; other methods
get the full prompt and their own settings. Videos and masks come from VideoGrain's dataset under
``<data_root>/videograin/`` (``paths.data_root``, env ``VIDEOEDIT_DATA_ROOT``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from videoedit.config import CONFIG_DIR
from videoedit.suites.base import Suite, SuiteClip, SuiteEdit

DOWNLOAD = (
    "Download VideoGrain's data (videograin_data.tar.gz from github.com/knightyxp/VideoGrain, or the HF dataset "
    "XiangpengYang/VideoGrain-dataset) and place its data/ folders under <data_root>/videograin/ "
    "(VIDEOEDIT_DATA_ROOT or paths.data_root)."
)
_DEFAULT = re.compile(r"^override /([^:]+)$")


def _resolve_root(value: str, data_root: str) -> str:
    return value.replace("${paths.data_root}", data_root)


def load_videograin(data_root: str | Path | None = None, config_dir: str | Path | None = None) -> Suite:
    """The VideoGrain suite (see the module docstring).

    Args:
        data_root: where ``videograin/<clip>/`` are (default ``$VIDEOEDIT_DATA_ROOT`` or ``data``); only used to
            check that the files exist: the jobs keep ``${paths.data_root}``.
        config_dir: the configs folder holding ``experiment/videograin_*.yaml`` (default: the project's).
    """
    root = str(data_root or os.environ.get("VIDEOEDIT_DATA_ROOT") or "data")
    folder = Path(config_dir or CONFIG_DIR) / "experiment"
    clips = []
    for path in sorted(folder.glob("videograin_*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        groups: dict[str, str] = {}
        for entry in node.get("defaults") or []:
            if isinstance(entry, dict):
                for key, value in entry.items():
                    match = _DEFAULT.match(str(key))
                    if match and match.group(1) not in ("method", "data"):
                        groups[match.group(1)] = str(value)
        data: dict[str, Any] = dict(node["data"])
        prompts = node["prompts"]
        edits = tuple(
            SuiteEdit(f"edit{i}", tuple(map(str, p)) if isinstance(p, list) else str(p), "layout")
            for i, p in enumerate(prompts)
        )
        required = [("video", (Path(_resolve_root(str(data["path"]), root)),))]
        if data.get("masks_dir"):
            required.append(("layout masks", (Path(_resolve_root(str(data["masks_dir"]), root)),)))
        config = {k: node[k] for k in ("negative_prompt", "seed", "controlnet") if k in node}
        clips.append(
            SuiteClip(
                id=path.stem[len("videograin_") :],
                source_prompt=str(data.get("prompt") or ""),
                edits=edits,
                data_group="video",
                data=data,
                groups=groups,
                config=config,
                method_config={"videograin": node.get("method") or {}},
                required=tuple(required),
            )
        )
    return Suite(
        name="videograin",
        title="VideoGrain examples",
        source="the 29 official configs of github.com/knightyxp/VideoGrain (Yang et al., ICLR 2025)",
        licence="configs: as the VideoGrain repository; data: VideoGrain's dataset terms",
        clips=tuple(clips),
        download=DOWNLOAD,
        notes="Methods without regions use each edit's full prompt.",
    )
