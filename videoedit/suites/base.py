"""What a benchmark suite is: clips, each with its source prompt, its edits and how to load it.

A :class:`Suite` is plain data: ``videoedit bench`` turns each :class:`SuiteClip` into a Hydra config (the
clip's data config group and keys, its prompts) and runs every method on it. Loaders read the user's
downloaded files (index files, videos); :meth:`Suite.check` names exactly what is missing before any run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoedit.errors import InputError


class SuiteDataError(InputError):
    """A suite's index file or videos are missing: the message names each missing path and how to get it."""


@dataclass(frozen=True)
class SuiteEdit:
    """One edit of a clip.

    Attributes:
        name: its name in the suite (``style``, ``object``, ``0``, ``edit1``...).
        prompt: the target prompt, or ``(full prompt, local prompt per region...)`` (VideoGrain layout).
        kind: the benchmark's edit type (``style``, ``foreground``, ``color alteration``...), or ``None``.
    """

    name: str
    prompt: str | tuple[str, ...]
    kind: str | None = None

    @property
    def full_prompt(self) -> str:
        """The full target prompt (the first element of a layout prompt)."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


@dataclass(frozen=True)
class SuiteClip:
    """One source clip of a suite and its edits.

    Attributes:
        id: unique in the suite (``DAVIS_480p/bmx-rider``).
        source_prompt: the caption of the source (inversion prompt).
        edits: the clip's edits.
        data_group: the ``data`` config group that loads it (``video``, ``two_figures``...).
        data: keys of that data config (``path``, ``num_frames``, ``prompt``...).
        groups: other config-group choices the clip needs (``{"controlnet": "depth"}``).
        config: other top-level config values (``{"negative_prompt": "jittery"}``).
        method_config: per method name, a ``method`` block used when that method runs (official settings).
        required: ``(what, alternatives)``: at least one path of each entry must exist.
    """

    id: str
    source_prompt: str
    edits: tuple[SuiteEdit, ...]
    data_group: str = "video"
    data: Mapping[str, Any] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    method_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    required: tuple[tuple[str, tuple[Path, ...]], ...] = ()

    @property
    def slug(self) -> str:
        """The clip id as a folder / config name (``DAVIS_480p__bmx-rider``)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.id.replace("/", "__"))

    def missing(self) -> list[str]:
        """``"<what>: <path> (or <alternative>)"`` for each required file that exists in none of its forms."""
        out = []
        for what, paths in self.required:
            if not any(Path(p).exists() for p in paths):
                out.append(f"{what}: " + " or ".join(str(p) for p in paths))
        return out


@dataclass(frozen=True)
class Suite:
    """A benchmark suite.

    Attributes:
        name: ``tgve``, ``v2vbench``, ``five``, ``videograin``, ``synthetic``.
        title: its published name.
        source: where its index/prompts come from (paper, repository, revision).
        licence: the licence of the prompts (and what is known of the videos').
        clips: the clips, in the suite's order.
        download: how to get the missing files (printed with them).
        notes: what the loader could not take from the suite (e.g. masks it does not read).
    """

    name: str
    title: str
    source: str
    licence: str
    clips: tuple[SuiteClip, ...]
    download: str = ""
    notes: str = ""

    @property
    def num_edits(self) -> int:
        return sum(len(c.edits) for c in self.clips)

    def missing(self) -> list[str]:
        """Every missing file of every clip (``<clip>: <what>: <path>``)."""
        return [f"{clip.id}: {item}" for clip in self.clips for item in clip.missing()]

    def check(self, limit: int = 20) -> None:
        """Raise :class:`SuiteDataError` naming what is missing (the first ``limit`` items and the count)."""
        missing = self.missing()
        if not missing:
            return
        broken = {m.split(": ", 1)[0] for m in missing}
        shown = "\n  ".join(missing[:limit])
        more = f"\n  ... and {len(missing) - limit} more" if len(missing) > limit else ""
        raise SuiteDataError(
            f"{self.title}: {len(broken)} of {len(self.clips)} clips have missing files:\n  {shown}{more}\n"
            + (f"{self.download}" if self.download else "")
        )

    def select(
        self,
        clips: Sequence[str] | None = None,
        edits: Sequence[str] | None = None,
        max_clips: int | None = None,
    ) -> Suite:
        """A sub-suite: only the clips whose id (or the part after the last ``/``) is in ``clips``, only the
        edits whose name or kind is in ``edits``, at most ``max_clips`` clips.

        Raises:
            InputError: a requested clip or edit matches nothing (with the available names).
        """
        chosen = list(self.clips)
        if clips:
            wanted = set(map(str, clips))
            chosen = [c for c in chosen if c.id in wanted or c.id.rsplit("/", 1)[-1] in wanted]
            found = {c.id for c in chosen} | {c.id.rsplit("/", 1)[-1] for c in chosen}
            unknown = sorted(wanted - found)
            if unknown:
                raise InputError(
                    f"{self.title} has no clip {', '.join(unknown)}; it has: "
                    + ", ".join(c.id for c in self.clips[:30])
                    + (" ..." if len(self.clips) > 30 else "")
                )
        if edits:
            wanted = set(map(str, edits))
            kept = []
            for clip in chosen:
                picked = tuple(e for e in clip.edits if e.name in wanted or (e.kind or "") in wanted)
                if picked:
                    kept.append(_replace(clip, edits=picked))
            if not kept:
                names = sorted(
                    {e.name for c in self.clips for e in c.edits}
                    | {e.kind or "" for c in self.clips for e in c.edits}
                )
                raise InputError(
                    f"{self.title} has no edit named {', '.join(sorted(wanted))}; edits: {', '.join(n for n in names if n)}"
                )
            chosen = kept
        if max_clips is not None:
            chosen = chosen[: int(max_clips)]
        return _replace(self, clips=tuple(chosen))


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)
