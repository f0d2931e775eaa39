"""The one source of truth for what each metric means: definition, published source, unit and direction.

``metrics.json`` (``quality.metrics``), ``videoedit report``, ``videoedit bench``'s leaderboard and every
plot axis read their words from :data:`METRICS`; ``docs/metrics.md`` documents the same entries.
A plot axis says "higher is better" or "lower is better" from :attr:`MetricDefinition.higher_is_better`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Bumped whenever a definition below changes the numbers (recorded in quality.settings.definitions, so a
# resumed sweep recomputes metrics computed under an older definition instead of mixing them).
DEFINITIONS_VERSION = 2


@dataclass(frozen=True)
class MetricDefinition:
    """What a metric measures and where its definition comes from.

    Attributes:
        key: the key in ``metrics.json`` (``quality.edits.<edit>.<key>``) and in report columns.
        label: a short name for tables and plot titles.
        definition: the formula, in words precise enough to recompute it.
        source: the paper / benchmark / code whose definition this is.
        unit: the scale of the number.
        higher_is_better: the direction (``True``: higher is better; ``False``: lower is better).
        group: ``text``, ``temporal``, ``preservation``, ``reconstruction`` or ``cost``.
    """

    key: str
    label: str
    definition: str
    source: str
    unit: str
    higher_is_better: bool
    group: str

    @property
    def direction(self) -> str:
        """``"higher is better"`` or ``"lower is better"``."""
        return "higher is better" if self.higher_is_better else "lower is better"

    def axis_label(self) -> str:
        """``"CLIP-T (x100 cosine; higher is better)"``: what every plot axis of this metric shows."""
        return f"{self.label} ({self.unit}; {self.direction})"

    def record(self) -> dict[str, Any]:
        """The entry written to ``metrics.json`` ``quality.metrics.<key>`` (completed with model/backend)."""
        out = asdict(self)
        out.pop("key")
        out["direction"] = self.direction
        return out


_V2VBENCH = "V2VBench (Sun et al., arXiv:2407.07111), github.com/wenhao728/awesome-diffusion-v2v"
_TGVE = (
    "LOVEU-TGVE-2023 (Wu et al., arXiv:2310.16003), github.com/showlab/loveu-tgve-2023 scripts/run_eval.py"
)

METRICS: dict[str, MetricDefinition] = {
    m.key: m
    for m in (
        MetricDefinition(
            "clip_t",
            "CLIP-T",
            "CLIP text alignment: mean over frames of logit_scale.exp() x cos(text embedding of the edit's "
            "full prompt, image embedding of the frame); projected CLIP embeddings; logit_scale.exp() = 100 "
            "for OpenAI's CLIP models (default openai/clip-vit-large-patch14)",
            f"{_V2VBENCH} v2vbench/clip_text_alignment.py; {_TGVE} clip_score_text",
            "x100 cosine",
            True,
            "text",
        ),
        MetricDefinition(
            "frame_consistency_v2v",
            "frame consistency (V2VBench)",
            "mean over consecutive frame pairs of max(0, cos(p_t, p_t+1)), p = the CLIP vision tower's "
            "pooled output (pooler_output, before the projection)",
            f"{_V2VBENCH} v2vbench/clip_consistency.py ('semantic consistency')",
            "cosine",
            True,
            "temporal",
        ),
        MetricDefinition(
            "frame_consistency_tgve",
            "frame consistency (TGVE)",
            "mean over all ordered pairs of distinct frames (i != j) of cos(e_i, e_j), e = projected CLIP "
            "image embeddings",
            f"{_TGVE} clip_score_frame",
            "cosine",
            True,
            "temporal",
        ),
        MetricDefinition(
            "pick_score",
            "PickScore",
            "mean over frames of logit_scale.exp() x cos(text embedding of the edit's full prompt, image "
            "embedding of the frame) with the PickScore model (default yuvalkirstain/PickScore_v1 with the "
            "processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K); the scale used is recorded",
            "Kirstain et al., Pick-a-Pic (arXiv:2305.01569); "
            + f"{_V2VBENCH} v2vbench/pick_score.py; {_TGVE}",
            "x100 cosine",
            True,
            "text",
        ),
        MetricDefinition(
            "motion_alignment",
            "motion alignment",
            "minus the mean end-point error between the optical flows of the edited and the source clip: "
            "-mean over consecutive pairs and pixels of ||flow_edit(t->t+1) - flow_source(t->t+1)||_2, in "
            "pixels at the working resolution (V2VBench estimates flow with GMFlow; here RAFT-large or DIS, "
            "recorded as the backend)",
            f"{_V2VBENCH} v2vbench/motion_alignment.py",
            "-pixels",
            True,
            "temporal",
        ),
        MetricDefinition(
            "warp_error",
            "warp error",
            "output frame t+1 backward-warped into frame t with the SOURCE clip's flow t->t+1; mean absolute "
            "difference over the 3 channels of the pixels that pass the forward-backward occlusion check "
            "(UnFlow alpha 0.01, beta 0.5), then mean over the pairs; computed in float (StreamV2V's tool "
            "subtracts uint8 arrays, which wraps around). Flow: RAFT-large when its weights are present, "
            "OpenCV DIS otherwise (recorded)",
            "StreamV2V (Liang et al., arXiv:2405.15757) tools/warp_error.py; FLATTEN/TokenFlow-style warp error",
            "8-bit levels",
            False,
            "temporal",
        ),
        MetricDefinition(
            "warp_mse",
            "warp MSE",
            "as warp_error with squared differences of [0, 1] intensities, x1000",
            "StreamV2V tools/warp_error.py (the x10^-3 scale several papers print)",
            "x10^-3",
            False,
            "temporal",
        ),
        MetricDefinition(
            "psnr_preserved",
            "background PSNR",
            "protocol 'outside' (default): per frame 10 log10(255^2 / MSE) over the pixels no edited region "
            "covers (3 channels, 8-bit), identical pixels = max_psnr, mean over frames. Protocol 'pie_bench': "
            "both frames multiplied by the preserved-pixel mask (edited regions set to 0), whole-image PSNR on "
            "[0, 1] (torchmetrics), mean over frames",
            "'outside': ours (masked PSNR); 'pie_bench': PIE-Bench (Ju et al., arXiv:2310.01506) as used by "
            "FiVE-Bench (Li et al., arXiv:2503.13684) evaluation/metrics_calculator.py",
            "dB",
            True,
            "preservation",
        ),
        MetricDefinition(
            "ssim_preserved",
            "background SSIM",
            "protocol 'outside': the SSIM map (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, "
            "K2 0.03, per channel, scikit-image) averaged over the window centres whose whole window lies in "
            "the preserved pixels; protocol 'pie_bench': whole-image SSIM (torchmetrics) of the masked frames",
            "Wang et al. 2004; 'pie_bench': PIE-Bench / FiVE-Bench",
            "SSIM",
            True,
            "preservation",
        ),
        MetricDefinition(
            "lpips_preserved",
            "background LPIPS",
            "protocol 'outside': LPIPS v0.1 spatial map (torchmetrics' LPIPS network, backbone metrics.lpips_net, "
            "default alex) averaged over the preserved pixels; protocol 'pie_bench': whole-image LPIPS of the "
            "masked frames; mean over frames",
            "Zhang et al., LPIPS (arXiv:1801.03924); 'pie_bench': PIE-Bench / FiVE-Bench (squeeze backbone)",
            "LPIPS",
            False,
            "preservation",
        ),
        MetricDefinition(
            "reconstruction_psnr",
            "reconstruction PSNR",
            "10 log10(255^2 / MSE) between the source frames and the method's reconstruction of them, the MSE "
            "pooled over every pixel of the clip (identical = 100 dB); the reconstruction is the inversion "
            "regenerated with the source prompt, or the VAE round trip for inversion-free methods, as recorded "
            "in quality.reconstruction.definition",
            "the first check of an inversion-based edit (TokenFlow issues 12 and 14)",
            "dB",
            True,
            "reconstruction",
        ),
        MetricDefinition(
            "latency_s",
            "latency",
            "seconds per edit: (inversion + every edit of the run) / number of edits; model loading, "
            "condition maps, writing and metrics excluded",
            "ours; papers report seconds per video",
            "s",
            False,
            "cost",
        ),
        MetricDefinition(
            "latency_rel",
            "relative latency",
            "latency_s / latency_s of plain sampling (the bench's reference method) with the same backbone "
            "on the same clip, then mean over clips",
            "ours, normalised as papers report cost (x plain sampling)",
            "x reference",
            False,
            "cost",
        ),
        MetricDefinition(
            "peak_memory_gib",
            "peak memory",
            "peak memory of the run: CUDA max allocated when on a GPU, else the process's peak resident "
            "memory (reset at the start of each run)",
            "ours",
            "GiB",
            False,
            "cost",
        ),
        MetricDefinition(
            "memory_rel",
            "relative peak memory",
            "peak_memory_gib / peak_memory_gib of plain sampling (reference method) with the same backbone "
            "on the same clip, then mean over clips",
            "ours, normalised as papers report cost (x plain sampling)",
            "x reference",
            False,
            "cost",
        ),
        MetricDefinition(
            "edit_s",
            "edit time",
            "seconds of one edit (denoising of one prompt x seed, inversion excluded)",
            "ours",
            "s",
            False,
            "cost",
        ),
    )
}

# per-edit quality metrics, in the order reports show them
EDIT_METRICS: tuple[str, ...] = (
    "clip_t",
    "pick_score",
    "frame_consistency_v2v",
    "frame_consistency_tgve",
    "motion_alignment",
    "warp_error",
    "warp_mse",
    "psnr_preserved",
    "ssim_preserved",
    "lpips_preserved",
)
RUN_METRICS: tuple[str, ...] = ("reconstruction_psnr",)
COST_METRICS: tuple[str, ...] = ("latency_s", "latency_rel", "peak_memory_gib", "memory_rel")


def definition(key: str) -> MetricDefinition | None:
    """The definition of ``key`` (``None`` for a column that is not a metric, e.g. ``total_s``)."""
    return METRICS.get(key)


def axis_label(key: str) -> str:
    """The plot axis label of ``key``: its label, unit and direction; the bare key when it is not a metric."""
    found = METRICS.get(key)
    return found.axis_label() if found else key


def definitions_markdown() -> str:
    """The metrics table of ``docs/metrics.md`` (``python -m videoedit.metrics.definitions`` prints it; a test
    checks the docs hold exactly this table)."""
    lines = ["| key | metric | definition | source | unit | direction |", "|---|---|---|---|---|---|"]
    for key in (*EDIT_METRICS, *RUN_METRICS, *COST_METRICS, "edit_s"):
        m = METRICS[key]
        cells = [f"`{key}`", m.label, m.definition, m.source, m.unit, m.direction]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(definitions_markdown())
