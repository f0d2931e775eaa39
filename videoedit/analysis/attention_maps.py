"""Attention visualisations: per-word cross-attention heatmaps over frames, and the inversion-feature
clustering study (PCA images, KMeans label maps, clusters matched to words) of VideoGrain's
``vis_cross_attn`` and ``cluster_inversion_feature`` options.

Nouns are found without network access (the official code calls ``nltk.download`` at import time): a
word of the prompt is a candidate unless it is a closed-class word (articles, prepositions, pronouns,
auxiliaries, conjunctions, common adverbs), a numeral ("two", "third", "12") or an ``-ing`` form; users
can list the words explicitly.

Cluster ids are stable over time: KMeans numbers each frame's clusters arbitrarily (the official code
keeps those numbers, so a region changes colour and id from frame to frame); here frame ``f``'s clusters
are renumbered to the clusters of frame ``f - 1`` they share most tokens with (an optimal one-to-one
matching), before the words are assigned. ``cluster_study(..., stable_ids=False)`` keeps KMeans' numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from videoedit.io.visualize import REGION_COLORS, _font
from videoedit.layout.prompts import content_ids, find_token_span

_CLOSED_CLASS = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "each",
        "every",
        "no",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "yet",
        "for",
        "of",
        "in",
        "on",
        "at",
        "by",
        "to",
        "from",
        "with",
        "without",
        "into",
        "onto",
        "over",
        "under",
        "above",
        "below",
        "before",
        "after",
        "behind",
        "between",
        "among",
        "through",
        "across",
        "along",
        "around",
        "near",
        "beside",
        "besides",
        "toward",
        "towards",
        "up",
        "down",
        "out",
        "off",
        "about",
        "against",
        "during",
        "within",
        "upon",
        "via",
        "per",
        "than",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "will",
        "would",
        "can",
        "could",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "it",
        "its",
        "they",
        "them",
        "their",
        "he",
        "him",
        "his",
        "she",
        "her",
        "we",
        "us",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "mine",
        "very",
        "too",
        "also",
        "just",
        "not",
        "while",
        "who",
        "whom",
        "whose",
        "which",
        "what",
        "where",
        "when",
        "why",
        "how",
        "there",
        "here",
        "then",
    ]
)


#: cardinal and ordinal numerals and quantity words (never the noun of a cluster: "two men" -> "men")
_NUMERALS = frozenset(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
        "million",
        "dozen",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "both",
        "several",
        "many",
        "few",
        "multiple",
        "numerous",
        "single",
    ]
)


def candidate_nouns(prompt: str) -> list[str]:
    """Words of ``prompt`` that may be nouns (offline heuristic; see the module docstring)."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", prompt)  # digits ("2 men") never start a word here
    out = []
    for word in words:
        low = word.lower()
        if low in _CLOSED_CLASS or low in _NUMERALS or (low.endswith("ing") and len(low) > 5):
            continue
        if low not in (w.lower() for w in out):
            out.append(word)
    return out


def word_token_spans(tokenizer, prompt: str, words: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` token spans of ``words`` in the 77-token ``prompt`` (first occurrences, in order)."""
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    spans = []
    for word in words:
        wid = content_ids(tokenizer, word)
        start = find_token_span(ids, wid)
        if start is not None:
            spans.append((word, start, start + len(wid)))
    return spans


def _jet(x: np.ndarray) -> np.ndarray:
    """``(..., )`` in [0, 1] -> ``(..., 3)`` uint8 with matplotlib's ``jet`` colormap."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(x, 0, 1))[..., :3] * 255).astype(np.uint8)


def _upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """``(F, h, w)`` -> ``(F, H, W)`` numpy."""
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps[:, None].float(), size=size, mode=mode, **kwargs)[:, 0].numpy()


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    h, w = image.shape[:2]
    bar = Image.new("RGB", (w, max(12, h // 10)), (0, 0, 0))
    ImageDraw.Draw(bar).text((2, 1), text, fill=(255, 255, 255), font=_font(max(8, h // 14)))
    return np.concatenate([np.asarray(bar), image], axis=0)


def cross_attention_video(
    frames: np.ndarray, cross: torch.Tensor, grid: tuple[int, int], spans: Sequence[tuple[str, int, int]]
) -> np.ndarray:
    """Per-word cross-attention heatmaps next to each frame.

    Args:
        frames: ``(F, H, W, 3)`` uint8.
        cross: ``(F, h*w, 77)`` averaged cross-attention maps (probabilities or scaled scores).
        grid: ``(h, w)``.
        spans: ``(word, start, end)`` token spans to show.

    Returns:
        ``(F, H', W * (1 + len(spans)), 3)`` uint8: the frame, then one heatmap overlay per word, captioned.
    """
    num_frames, height, width = frames.shape[:3]
    panels = [[_caption(f, "frame")] for f in frames]
    for word, start, end in spans:
        maps = cross[:, :, start:end].mean(-1).reshape(num_frames, *grid)
        # one min-max scale over the clip (changes over time stay visible; works for scores and probabilities)
        maps = (maps - maps.min()) / (maps.max() - maps.min()).clamp_min(1e-12)
        heat = _jet(_upsample(maps, (height, width)))
        overlay = (0.5 * frames + 0.5 * heat).astype(np.uint8)
        for f in range(num_frames):
            panels[f].append(_caption(overlay[f], word))
    return np.stack([np.concatenate(p, axis=1) for p in panels])


@dataclass
class ClusterStudy:
    """Result of :func:`cluster_study`.

    Attributes:
        labels: ``(F, h, w)`` KMeans cluster of each token.
        pca: ``(F, h, w, 3)`` uint8, the first three principal components as RGB.
        words: per frame, ``{cluster: word}`` (empty when no candidate word is found).
    """

    labels: np.ndarray
    pca: np.ndarray
    words: list[dict[int, str]]


def match_labels(previous: np.ndarray, current: np.ndarray, num_clusters: int) -> np.ndarray:
    """Renumber ``current`` labels so that each cluster takes the id of the ``previous`` cluster it
    overlaps most, one-to-one (Hungarian matching on the ``(K, K)`` token-overlap counts).

    Args:
        previous, current: label maps of equal shape with ids in ``[0, num_clusters)``.

    Returns:
        ``current`` renumbered (same partition, new ids).
    """
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((num_clusters, num_clusters), dtype=np.int64)  # [previous id, current id]
    np.add.at(overlap, (previous.ravel(), current.ravel()), 1)
    rows, cols = linear_sum_assignment(-overlap)
    new_id = np.empty(num_clusters, dtype=np.int64)
    new_id[cols] = rows
    return new_id[current]


def cluster_study(
    self_maps: torch.Tensor,
    grid: tuple[int, int],
    num_clusters: int = 3,
    cross_maps: torch.Tensor | None = None,
    word_spans: Sequence[tuple[str, int, int]] = (),
    seed: int = 1,
    stable_ids: bool = True,
) -> ClusterStudy:
    """Cluster each frame's tokens by their averaged self-attention rows (official ``sd_study``).

    Per frame: PCA (3 components, min-max normalised to RGB) and KMeans (``n_init=10``, seeded) on the
    ``(N, N)`` matrix of attention rows. With ``stable_ids`` each frame's clusters are renumbered after
    the previous frame's (:func:`match_labels`; the official code keeps KMeans' arbitrary numbers). Clusters,
    in order, take the unassigned word with the highest mean cross-attention inside them. (The official
    code first looks for a word scoring above 0.1 and otherwise forces the best unassigned one, which is
    the same choice.)

    Args:
        self_maps: ``(F, N, N)`` averaged per-frame self-attention probabilities.
        cross_maps: ``(F, N, 77)`` averaged cross-attention probabilities (for the word matching).
        stable_ids: renumber clusters over time (see above).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    num_frames, n, _ = self_maps.shape
    h, w = grid
    labels = np.zeros((num_frames, h, w), dtype=np.int64)
    pca_images = np.zeros((num_frames, h, w, 3), dtype=np.uint8)
    words: list[dict[int, str]] = []
    for f in range(num_frames):
        feats = self_maps[f].double().numpy()
        comps = PCA(n_components=min(3, n), random_state=seed).fit_transform(feats)
        lo, hi = comps.min(0), comps.max(0)
        comps = (comps - lo) / np.where(hi > lo, hi - lo, 1)
        rgb = np.zeros((n, 3))
        rgb[:, : comps.shape[1]] = comps
        pca_images[f] = (rgb * 255).round().astype(np.uint8).reshape(h, w, 3)
        lab = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(feats)
        if stable_ids and f > 0:
            lab = match_labels(labels[f - 1].ravel(), lab, num_clusters)
        labels[f] = lab.reshape(h, w)
        assigned: dict[int, str] = {}
        if cross_maps is not None and word_spans:
            scores = np.stack(
                [cross_maps[f, :, s:e].mean(-1).double().numpy() for _, s, e in word_spans], 1
            )  # (N, W)
            free = list(range(len(word_spans)))
            for c in range(num_clusters):
                if not free:
                    break
                inside = lab == c
                mean = scores[inside][:, free].mean(0) if inside.any() else np.zeros(len(free))
                best = int(np.argmax(mean))
                assigned[c] = word_spans[free[best]][0]
                free.pop(best)
        words.append(assigned)
    return ClusterStudy(labels=labels, pca=pca_images, words=words)


def render_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(F, h, w)`` cluster labels -> ``(F, H, W, 3)`` uint8 colour images (nearest upsampling)."""
    colors = REGION_COLORS.astype(np.uint8)[labels % len(REGION_COLORS)]
    t = torch.from_numpy(colors).permute(0, 3, 1, 2).float()
    return F.interpolate(t, size=size, mode="nearest").permute(0, 2, 3, 1).byte().numpy()


def upsample_rgb(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return F.interpolate(t, size=size, mode="nearest").permute(0, 2, 3, 1).byte().numpy()
