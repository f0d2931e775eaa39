import pytest
import torch

from videoedit.errors import ConfigError
from videoedit.inversion.ddim import ddim_invert, inversion_grid, sampling_timesteps
from videoedit.models.components import sd_ddim_scheduler
from videoedit.pipelines.pipeline_ddim import DDIMEditPipeline


def test_schedules_match_the_official_ones():
    s = sd_ddim_scheduler()
    assert sampling_timesteps(s, 50)[:3] == [981, 961, 941] and sampling_timesteps(s, 50)[-1] == 1
    grid = inversion_grid(s, 50)
    assert grid == list(range(1, 982, 20))
    fine = inversion_grid(s, 50, 500)
    assert fine[0] == 1 and fine[-1] == 999 and len(fine) == 500
    assert set(range(1, 982, 20)) <= set(fine)


def test_schedule_mismatch_is_an_error_before_work():
    with pytest.raises(
        ConfigError,
        match=r"does not contain the sampling timesteps .* step size \(1000 // steps\) divides the editing step size \(20\)",
    ):
        inversion_grid(sd_ddim_scheduler(), 50, 30)


@pytest.mark.parametrize("noise_timestep", ["current", "next"])
def test_inversion_then_sampling_reconstructs_exactly(noise_timestep):
    """With a noise predictor that does not depend on x, DDIM is exactly invertible."""
    s = sd_ddim_scheduler()
    z0 = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps_of_t = {
        t: torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
        for t in range(1000)
    }
    calls = []

    def predict(x, t):
        calls.append(t)
        return eps_of_t[t]

    grid = inversion_grid(s, 10)
    latents = ddim_invert(predict, z0, grid, s.alphas_cumprod, s.final_alpha_cumprod, noise_timestep)
    assert sorted(latents) == grid
    if noise_timestep == "current":
        assert calls == grid[:-1] and torch.equal(latents[grid[0]], z0)
    else:
        assert calls == grid
    # sample back down with the same predictor: t -> t - 100, evaluated where the inversion did
    x = latents[grid[-1]]
    alphas = s.alphas_cumprod.double()
    for i in range(len(grid) - 1, 0, -1):
        t, t_prev = grid[i], grid[i - 1]
        eps = eps_of_t[t_prev] if noise_timestep == "current" else eps_of_t[t]
        x0 = (x - (1 - alphas[t]).sqrt() * eps) / alphas[t].sqrt()
        x = alphas[t_prev].sqrt() * x0 + (1 - alphas[t_prev]).sqrt() * eps
        torch.testing.assert_close(x, latents[t_prev])


def test_keep_subset_and_validation():
    s = sd_ddim_scheduler()
    grid = inversion_grid(s, 5)
    out = ddim_invert(
        lambda x, t: torch.zeros_like(x), torch.ones(1, 4, 2, 2), grid, s.alphas_cumprod, 1.0, keep=[grid[-1]]
    )
    assert list(out) == [grid[-1]]
    with pytest.raises(ValueError, match="not on the inversion grid"):
        ddim_invert(lambda x, t: x, torch.ones(1, 4, 2, 2), grid, s.alphas_cumprod, 1.0, keep=[7])


def test_pipeline_inversion_shapes_and_determinism(tiny_components):
    pipe = DDIMEditPipeline.from_components(tiny_components)
    pipe.set_progress_bar_config(disable=True)
    frames = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    control = (
        (torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8).numpy()
    )
    a = pipe.invert(frames, "a video", control=control, num_inference_steps=4)
    b = pipe.invert(frames, "a video", control=control, num_inference_steps=4)
    assert a.timesteps == [1, 251, 501, 751]
    assert a.source_latents.shape == (3, 4, 8, 8)
    for t in a.timesteps:
        assert a.at(t).shape == (3, 4, 8, 8)
        torch.testing.assert_close(a.at(t), b.at(t), rtol=0, atol=0)
    # frame batching does not change a per-frame method's inversion
    c = pipe.invert(frames, "a video", control=control, num_inference_steps=4, frame_batch_size=2)
    torch.testing.assert_close(a.noisiest, c.noisiest, rtol=1e-4, atol=1e-5)
    # the ControlNet takes part in the inversion
    d = pipe.invert(frames, "a video", control=None, num_inference_steps=4)
    assert (a.noisiest - d.noisiest).abs().mean() > 1e-4
