"""Benchmark suites: LOVEU-TGVE-2023 (prompts shipped), V2VBench and FiVE-Bench (loaders for the user's
downloaded files), VideoGrain's 29 official examples, and a synthetic two-clip suite (offline, CI).

``load_suite(name, root, **options)`` returns a :class:`Suite`; ``Suite.check()`` names every missing file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from videoedit.errors import InputError
from videoedit.suites.base import Suite, SuiteClip, SuiteDataError, SuiteEdit
from videoedit.suites.five import load_five
from videoedit.suites.synthetic import load_synthetic
from videoedit.suites.tgve import load_tgve
from videoedit.suites.v2vbench import load_v2vbench
from videoedit.suites.videograin import load_videograin

# name -> (loader, whether it needs the user's downloaded folder)
SUITES: dict[str, tuple[Callable[..., Suite], bool]] = {
    "tgve": (load_tgve, False),
    "v2vbench": (load_v2vbench, True),
    "five": (load_five, True),
    "videograin": (load_videograin, False),
    "synthetic": (load_synthetic, False),
}


def load_suite(name: str, root: str | Path | None = None, **options: Any) -> Suite:
    """Load the suite ``name`` (see :data:`SUITES`), its files under ``root``.

    ``root`` is the downloaded dataset folder (``tgve``, ``v2vbench``, ``five``), the data root
    (``videograin``) or unused (``synthetic``). ``options`` go to the loader (e.g. ``subsets``,
    ``num_frames``, ``edit_types``).

    Raises:
        InputError: an unknown suite, a suite that needs ``root`` without one, or unknown options.
    """
    if name not in SUITES:
        raise InputError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    loader, needs_root = SUITES[name]
    if needs_root and not root:
        raise InputError(
            f"the {name} suite reads your downloaded copy: give its folder (--suite-root <folder>)"
        )
    kwargs = dict(options)
    if name == "videograin":
        kwargs["data_root"] = root
    elif name != "synthetic":
        kwargs["root"] = root
    elif root:
        raise InputError("the synthetic suite is generated: it takes no --suite-root")
    try:
        return loader(**kwargs)
    except TypeError as err:
        raise InputError(f"bad options for the {name} suite {sorted(options)}: {err}") from err


__all__ = [
    "SUITES",
    "Suite",
    "SuiteClip",
    "SuiteDataError",
    "SuiteEdit",
    "load_five",
    "load_suite",
    "load_synthetic",
    "load_tgve",
    "load_v2vbench",
    "load_videograin",
]
