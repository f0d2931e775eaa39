"""Region masks on a causal video VAE's latent frames and a DiT's token grid."""

import pytest
import torch

from videoedit.errors import ConfigError
from videoedit.layout.video_tokens import (
    latent_frame_coverage,
    latent_frame_groups,
    pool_coverage,
    token_masks,
)


def test_latent_frame_groups_follow_the_causal_vae():
    assert latent_frame_groups(9, 4) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert latent_frame_groups(1, 4) == [[0]]
    with pytest.raises(ValueError, match="do not fit"):
        latent_frame_groups(8, 4)


def test_mean_and_any_coverage():
    masks = torch.zeros(5, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, :8] = True  # frame 0 alone
    masks[1, 0, :, :4] = True  # one of the four frames of latent frame 1
    cov_mean = latent_frame_coverage(masks, 4, "mean")
    cov_any = latent_frame_coverage(masks, 4, "any")
    assert cov_mean.shape == (2, 1, 16, 16)
    assert cov_mean[0, 0, 0, 0] == 1 and cov_mean[0, 0, 15, 0] == 0
    assert cov_mean[1, 0, 0, 0] == 0.25 and cov_any[1, 0, 0, 0] == 1
    with pytest.raises(ConfigError, match=r"layout\.temporal"):
        latent_frame_coverage(masks, 4, "last")


def test_token_membership_thresholds_each_footprint():
    masks = torch.zeros(1, 2, 32, 32, dtype=torch.bool)
    masks[0, 0, :16, :16] = True  # exactly the top-left token of a 2x2 grid
    masks[0, 1, :8, 16:] = True  # half of the top-right token
    tokens = token_masks(masks, 4, (2, 2), "mean", threshold=0.5)
    assert tokens.shape == (1, 2, 2, 2)
    assert tokens[0, 0].tolist() == [[True, False], [False, False]]
    assert tokens[0, 1].tolist() == [[False, True], [False, False]]  # 50% >= 0.5
    assert not token_masks(masks, 4, (2, 2), "mean", threshold=0.6)[0, 1].any()
    with pytest.raises(ValueError, match="not a multiple"):
        pool_coverage(masks.float(), (3, 3))
