"""Cluster studies that explain themselves: stable cluster ids over time, nouns without numerals."""

import numpy as np
import pytest
import torch

from videoedit.analysis.attention_maps import candidate_nouns, cluster_study, match_labels


@pytest.mark.parametrize(
    ("prompt", "nouns"),
    [
        ("two men jogging in a park", ["men", "park"]),
        ("Three dogs and a cat", ["dogs", "cat"]),
        ("the second of 3 cars on both lanes", ["cars", "lanes"]),
        ("a man with twelve balloons", ["man", "balloons"]),
    ],
)
def test_nouns_never_include_numerals(prompt, nouns):
    assert candidate_nouns(prompt) == nouns


def test_match_labels_undoes_a_permutation():
    rng = np.random.default_rng(0)
    previous = rng.integers(0, 4, (8, 8))
    permutation = np.array([2, 0, 3, 1])
    current = permutation[previous]
    np.testing.assert_array_equal(match_labels(previous.ravel(), current.ravel(), 4), previous.ravel())
    # a partly changed map: each cluster still goes to the one it overlaps most
    moved = previous.copy()
    moved[0] = (moved[0] + 1) % 4
    renamed = match_labels(previous.ravel(), permutation[moved].ravel(), 4)
    np.testing.assert_array_equal(renamed, moved.ravel())


def _self_maps(num_frames: int, grid: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Self-attention rows of 3 spatial groups (left band, right band moving right, the rest)."""
    rng = np.random.default_rng(seed)
    n = grid * grid
    maps, truths = [], []
    for f in range(num_frames):
        truth = np.full((grid, grid), 2)
        truth[:, :3] = 0
        truth[: grid // 2, 4 + f % 3 : 7 + f % 3] = 1
        groups = truth.ravel()
        rows = (groups[:, None] == groups[None, :]).astype(np.float64) + 0.05 * rng.random((n, n))
        maps.append(rows / rows.sum(1, keepdims=True))
        truths.append(truth)
    return torch.tensor(np.stack(maps)), np.stack(truths)


def test_cluster_ids_are_stable_over_frames():
    maps, truth = _self_maps(6, 10)
    stable = cluster_study(maps, (10, 10), num_clusters=3, seed=1)
    # each true group keeps one id in every frame (and the ids of frame 0 are KMeans' own)
    for group in range(3):
        ids = {int(np.bincount(stable.labels[f][truth[f] == group]).argmax()) for f in range(6)}
        assert len(ids) == 1, (group, ids)
    # the partition is KMeans' in every frame: only the numbering changed
    raw = cluster_study(maps, (10, 10), num_clusters=3, seed=1, stable_ids=False)
    for f in range(6):
        pairs = set(zip(raw.labels[f].ravel().tolist(), stable.labels[f].ravel().tolist()))
        assert len(pairs) == 3  # a bijection between the two numberings
    np.testing.assert_array_equal(raw.labels[0], stable.labels[0])
