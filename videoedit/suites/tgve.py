"""LOVEU-TGVE-2023 (CVPR 2023 text-guided video editing competition): 76 videos x 4 edit types.

The 76 per-video YAML configs of github.com/showlab/loveu-tgve-2023 (commit ``d75589f``, Apache-2.0; the
licence file ships beside them in ``videoedit/suites/data/loveu-tgve-2023/``) hold the prompts: the source
caption (``train_data.prompt``) and four target captions (``validation_data.prompts``: ``style``,
``object``, ``background``, ``multiple``). The videos are not shipped: download ``loveu-tgve-2023.zip``
(link in the upstream README) and unzip it; ``root`` is the folder that holds ``DAVIS_480p/``,
``youtube_480p/`` and ``videvo_480p/``, each with ``480p_frames/<video>/*.jpg`` (or ``480p_videos/<video>.mp4``).
Frames: 32 (DAVIS, Videvo) or 128 (YouTube) at 480x480, the counts of the configs.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml

from videoedit.errors import InputError
from videoedit.suites.base import Suite, SuiteClip, SuiteEdit

SUBSETS = ("DAVIS_480p", "youtube_480p", "videvo_480p")
EDIT_TYPES = ("style", "object", "background", "multiple")
DOWNLOAD = (
    "Download loveu-tgve-2023.zip (https://drive.google.com/file/d/1D7ZVm66IwlKhS6UINoDgFiFJp_mLIQ0W, linked "
    "from github.com/showlab/loveu-tgve-2023) and unzip it; give the folder holding DAVIS_480p/, "
    "youtube_480p/ and videvo_480p/ as the suite root (--suite-root)."
)


def data_dir() -> Path:
    """The packaged copy of the upstream files (configs, LICENSE, SHA256SUMS)."""
    return Path(str(resources.files("videoedit.suites") / "data" / "loveu-tgve-2023"))


def load_tgve(
    root: str | Path | None = None,
    subsets: Sequence[str] = SUBSETS,
    num_frames: int | None = None,
) -> Suite:
    """The LOVEU-TGVE-2023 suite, its videos under ``root`` (see the module docstring).

    Args:
        root: the unzipped dataset folder (``None``: prompts only, every video reported missing).
        subsets: which of ``DAVIS_480p``, ``youtube_480p``, ``videvo_480p``.
        num_frames: frames per clip (default: the config's own count, 32 or 128).
    """
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise InputError(f"LOVEU-TGVE-2023 has no subset {', '.join(unknown)}; subsets: {', '.join(SUBSETS)}")
    base = Path(root).expanduser() if root else Path("<suite root>")
    clips = []
    for subset in subsets:
        folder = data_dir() / "configs" / "loveu-tgve-2023" / subset
        for path in sorted(folder.glob("*.yaml")):
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            video = path.stem
            train, prompts = config["train_data"], config["validation_data"]["prompts"]
            frames = base / subset / "480p_frames" / video
            mp4 = base / subset / "480p_videos" / f"{video}.mp4"
            clips.append(
                SuiteClip(
                    id=f"{subset}/{video}",
                    source_prompt=str(train["prompt"]).strip(),
                    edits=tuple(SuiteEdit(k, str(prompts[k]).strip(), k) for k in EDIT_TYPES),
                    data={
                        "path": str(frames if frames.is_dir() or not mp4.is_file() else mp4),
                        "prompt": str(train["prompt"]).strip(),
                        "num_frames": int(num_frames or train["num_frames"]),
                        "name": video,
                    },
                    required=((f"{video} frames", (frames, mp4)),),
                )
            )
    return Suite(
        name="tgve",
        title="LOVEU-TGVE-2023",
        source="github.com/showlab/loveu-tgve-2023 @ d75589f (Wu et al., arXiv:2310.16003)",
        licence="prompts: Apache-2.0 (LICENSE shipped with them); videos: 'creative commons' per upstream, "
        "no per-video licence",
        clips=tuple(clips),
        download=DOWNLOAD,
        notes="The youtube_480p/eiffel-flyover 'style' prompt equals its source prompt (upstream).",
    )
