"""One source of truth for the metrics: every metric has a definition, a source, a unit and a direction; plots
and docs say the same; reconstruction PSNR; the per-run peak memory window."""

import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from videoedit.metrics.definitions import (
    COST_METRICS,
    EDIT_METRICS,
    METRICS,
    RUN_METRICS,
    axis_label,
    definitions_markdown,
)
from videoedit.metrics.reconstruction import reconstruction_psnr
from videoedit.metrics.run_facts import peak_memory, reset_peak_memory


def test_every_metric_is_defined_with_its_source_and_direction():
    for key in (*EDIT_METRICS, *RUN_METRICS, *COST_METRICS, "edit_s"):
        metric = METRICS[key]
        assert metric.key == key and metric.definition and metric.source and metric.unit
        assert axis_label(key) == f"{metric.label} ({metric.unit}; {metric.direction})"
    lower = {k for k, m in METRICS.items() if not m.higher_is_better}
    assert {"warp_error", "warp_mse", "lpips_preserved", "latency_rel", "memory_rel"} <= lower
    assert METRICS["motion_alignment"].higher_is_better and METRICS["clip_t"].higher_is_better
    assert axis_label("total_s") == "total_s"  # not a metric: the bare key
    record = METRICS["clip_t"].record()
    assert record["direction"] == "higher is better" and "key" not in record


def test_the_docs_define_every_metric():
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert (
        definitions_markdown() in text
    )  # the registry's table, verbatim (python -m videoedit.metrics.definitions)
    for key in (*EDIT_METRICS, *RUN_METRICS, *COST_METRICS):
        assert f"`{key}`" in text, key
    for source in (
        "arXiv:2407.07111",
        "arXiv:2310.16003",
        "arXiv:2305.01569",
        "arXiv:1801.03924",
        "arXiv:2503.13684",
    ):
        assert source in text


def test_reconstruction_psnr_pools_the_error_over_the_clip():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(source.astype(int) + rng.integers(-8, 9, source.shape), 0, 255).astype(np.uint8)
    mse = ((source.astype(float) - noisy) ** 2).mean()  # over every pixel of every frame
    assert reconstruction_psnr(source, noisy) == pytest.approx(10 * math.log10(255**2 / mse))
    assert reconstruction_psnr(source, source) == 100.0
    assert "pooled over every pixel of the clip" in METRICS["reconstruction_psnr"].definition


def test_the_peak_memory_window_restarts_with_each_run():
    big = np.ones(200 * 1024 * 1024 // 8)  # 200 MiB resident
    big[::512] = 2.0
    high = peak_memory()["cpu_max_rss_bytes"]
    del big
    reset_peak_memory()
    after = peak_memory()["cpu_max_rss_bytes"]
    if not (Path("/proc/self/status").is_file() and "VmHWM" in Path("/proc/self/status").read_text()):
        pytest.skip("no VmHWM on this system: the peak is the process's lifetime peak")
    assert after < high - 150 * 1024 * 1024
