"""Shared fixtures: offline environment, tiny components, composed configs, the shared test data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests never touch a model hub, even when run without test.sh.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


FULL_MATRIX_COMMAND = "VIDEOEDIT_FULL_MATRIX=1 bash test.sh tests/test_dtype_matrix.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``full_matrix`` (the slow rest of the dtype matrix) run only with VIDEOEDIT_FULL_MATRIX=1."""
    if os.environ.get("VIDEOEDIT_FULL_MATRIX") == "1":
        return
    skip = pytest.mark.skip(reason=f"the rest of the dtype matrix: {FULL_MATRIX_COMMAND}")
    for item in items:
        if "full_matrix" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_roots(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Cache and output roots in a temporary folder for the whole session."""
    base = tmp_path_factory.mktemp("videoedit")
    os.environ["VIDEOEDIT_CACHE_ROOT"] = str(base / "cache")
    os.environ["VIDEOEDIT_OUTPUT_ROOT"] = str(base / "outputs")
    os.environ["VIDEOEDIT_DATA_ROOT"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip when it is absent (a user's clone does not have it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    from videoedit.models.tokenizer import load_clip_tokenizer

    return load_clip_tokenizer(os.environ["VIDEOEDIT_CACHE_ROOT"] + "/tokenizer")


@pytest.fixture(scope="session")
def tiny_components():
    """The tiny stack with a ControlNet (session-scoped: treat as read-only)."""
    from videoedit.models.tiny import build_tiny_components

    return build_tiny_components(
        seed=0, controlnet="tiny", tokenizer_cache_dir=os.environ["VIDEOEDIT_CACHE_ROOT"] + "/tokenizer"
    )


@pytest.fixture(scope="session")
def tiny_wan():
    """The tiny Wan 2.1 stack (session-scoped: treat as read-only)."""
    from videoedit.models.wan import build_tiny_wan

    return build_tiny_wan(seed=0, tokenizer_cache_dir=os.environ["VIDEOEDIT_CACHE_ROOT"] + "/tokenizer")


@pytest.fixture()
def compose():
    """``compose(*overrides)`` -> the composed config (``configs/config.yaml``)."""
    from videoedit.config import compose_config

    return lambda *overrides: compose_config(list(overrides))


# Overrides for fast end-to-end runs with the tiny model (4 frames at 128 px, 3 steps). No CLIP scores:
# metrics.clip_model=auto would load CLIP weights from a user's Hugging Face cache.
FAST = [
    "model=tiny",
    "data=two_figures",
    "data.num_frames=4",
    "data.height=128",
    "data.width=128",
    "method.num_inference_steps=3",
    "progress_bar=false",
    "metrics.clip_model=null",
]

# The same for the Wan backbone: 5 frames (4k+1) at 64 px; FlowEdit runs 3 of 4 steps.
WAN_TINY = [
    "model=wan_tiny",
    "controlnet=none",
    "data=two_figures",
    "data.num_frames=5",
    "data.height=64",
    "data.width=64",
    "progress_bar=false",
    "metrics.clip_model=null",
]
WAN_FAST = [*WAN_TINY, "method=flowedit", "method.num_inference_steps=4", "method.n_max=3"]
