"""Deterministic DDIM inversion as pure tensor code.

Given clean latents ``z0`` and a noise predictor ``eps(x, t)``, DDIM inversion runs the DDIM update
backwards, from low to high noise::

    x0_hat  = (x - sqrt(1 - a_from) * eps) / sqrt(a_from)
    x_next  = sqrt(a_to) * x0_hat + sqrt(1 - a_to) * eps            (a = alphas_cumprod)

Two conventions exist in the official code, and both are offered (``noise_timestep``):

``"current"`` (diffusers' ``DDIMInverseScheduler`` as VideoGrain uses it): ``z0`` is taken as the latent
    at the first timestep (t=1 for 50 steps), and the noise is predicted at the level being left:
    ``len(timesteps) - 1`` UNet calls, ``t = 1, 21, ..., 961`` each moving to ``t + 20``.
``"next"`` (TokenFlow / pnp-diffusers ``preprocess.py``): ``z0`` sits at the clean level
    (``final_alpha_cumprod``) and the noise is predicted at the level being reached:
    ``len(timesteps)`` UNet calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from videoedit.errors import ConfigError
from videoedit.numerics import check_finite

NoiseTimestep = Literal["current", "next"]
NoisePredictor = Callable[[torch.Tensor, int], torch.Tensor]


def ddim_step_between(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move ``x`` from the noise level ``alpha_from`` to ``alpha_to`` (``alphas_cumprod`` values) with ``eps``."""
    a_from = torch.as_tensor(alpha_from, dtype=torch.float64)
    a_to = torch.as_tensor(alpha_to, dtype=torch.float64)
    x0 = (x - (1 - a_from).sqrt().to(x.dtype) * eps) / a_from.sqrt().to(x.dtype)
    return a_to.sqrt().to(x.dtype) * x0 + (1 - a_to).sqrt().to(x.dtype) * eps


@torch.no_grad()
def ddim_invert(
    predict_noise: NoisePredictor,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
    final_alpha_cumprod: float,
    noise_timestep: NoiseTimestep = "current",
    keep: Iterable[int] | None = None,
    store_device: torch.device | str | None = "cpu",
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> dict[int, torch.Tensor]:
    """Invert clean ``latents`` through the ascending ``timesteps``.

    Args:
        predict_noise: ``(x (B, 4, h, w), t) -> eps (B, 4, h, w)``.
        latents: ``(B, 4, h, w)`` clean latents (frames folded into the batch).
        timesteps: ascending timesteps, e.g. ``1, 21, ..., 981`` (50 steps) or ``1, 3, ..., 999`` (500).
        alphas_cumprod: the scheduler's ``alphas_cumprod`` (1000 values).
        final_alpha_cumprod: the scheduler's ``final_alpha_cumprod`` (the clean level for ``"next"``).
        noise_timestep: see the module docstring.
        keep: timesteps whose latents are returned (all when ``None``).
        store_device: where kept latents are stored (``None``: where they were computed).
        callback: called after each step as ``callback(step_index, t_reached, x)``.

    Raises:
        NumericalError: the latents became NaN or infinite at a step (the message names it).

    Returns:
        ``{t: latents at noise level t}`` for the kept timesteps (with ``"current"``, ``timesteps[0]``
        maps to ``latents`` itself).
    """
    timesteps = [int(t) for t in timesteps]
    if sorted(timesteps) != timesteps or len(set(timesteps)) != len(timesteps):
        raise ValueError(f"inversion timesteps must be strictly ascending, got {timesteps[:5]}...")
    keep_set = set(timesteps) if keep is None else {int(t) for t in keep}
    unknown = keep_set - set(timesteps)
    if unknown:
        raise ValueError(f"cannot keep timesteps {sorted(unknown)[:5]}: they are not on the inversion grid")

    def store(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(store_device) if store_device is not None else x.detach().clone()

    alphas = alphas_cumprod.double().cpu()
    out: dict[int, torch.Tensor] = {}
    x = latents
    if noise_timestep == "current":
        if timesteps[0] in keep_set:
            out[timesteps[0]] = store(x)
        steps = [(alphas[a].item(), alphas[b].item(), a, b) for a, b in itertools.pairwise(timesteps)]
    elif noise_timestep == "next":
        levels = [float(final_alpha_cumprod)] + [alphas[t].item() for t in timesteps]
        steps = [(levels[i], levels[i + 1], t, t) for i, t in enumerate(timesteps)]
    else:
        raise ValueError(f"noise_timestep must be 'current' or 'next', got {noise_timestep!r}")
    for i, (a_from, a_to, t_eval, t_to) in enumerate(steps):
        eps = predict_noise(x, t_eval)
        x = ddim_step_between(x, eps, a_from, a_to)
        check_finite(x, "inverted latents", phase="invert", step=i, num_steps=len(steps), timestep=t_to)
        if t_to in keep_set:
            out[t_to] = store(x)
        if callback is not None:
            callback(i, t_to, x)
    return out


def sampling_timesteps(scheduler, num_inference_steps: int) -> list[int]:
    """The scheduler's sampling timesteps (descending), e.g. ``981, 961, ..., 1`` for 50 DDIM steps."""
    scheduler.set_timesteps(num_inference_steps)
    return [int(t) for t in scheduler.timesteps]


def inversion_grid(scheduler, num_inference_steps: int, num_inversion_steps: int | None = None) -> list[int]:
    """Ascending inversion timesteps whose grid contains every sampling timestep.

    With ``num_inversion_steps`` = ``None`` or equal to ``num_inference_steps`` this is the sampling
    schedule reversed. With more steps (TokenFlow inverts with 500 and edits with 50) it is the finer
    schedule, which must contain every sampling timestep; otherwise the saved latents could not be
    matched to the editing steps, and this raises before any work.
    """
    sample = sampling_timesteps(scheduler, num_inference_steps)
    if not num_inversion_steps or num_inversion_steps == num_inference_steps:
        return sample[::-1]
    fine = sampling_timesteps(scheduler, num_inversion_steps)[::-1]
    missing = sorted(set(sample) - set(fine))
    if missing:
        raise ConfigError(
            f"The inversion schedule ({num_inversion_steps} steps) does not contain the sampling timesteps "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''} of the {num_inference_steps}-step editing schedule. "
            f"Use a number of inversion steps whose step size (1000 // steps) divides the editing step size "
            f"({1000 // num_inference_steps}), e.g. 100, 250 or 500 for 50 editing steps."
        )
    scheduler.set_timesteps(num_inference_steps)  # leave the scheduler on the editing schedule
    return fine


@dataclass
class InversionOutput:
    """The result of inverting a clip.

    Attributes:
        latents: ``{t: (F, 4, h, w)}`` inverted latents at each kept timestep.
        source_latents: ``(F, 4, h, w)`` clean VAE latents of the frames (``z0``).
        extras: tensors captured during inversion by the method (features, attention maps...).
        cache_hit: whether this came from the on-disk cache.
        key: the cache key (empty when caching is off).
        cache_status: ``"hit"``, ``"miss"`` (computed and cached) or ``"off"`` (caching disabled).
    """

    latents: dict[int, torch.Tensor]
    source_latents: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    cache_hit: bool = False
    key: str = ""
    cache_status: str = "off"

    @property
    def timesteps(self) -> list[int]:
        return sorted(self.latents)

    def at(self, t: int) -> torch.Tensor:
        """Latents at timestep ``t``."""
        try:
            return self.latents[int(t)]
        except KeyError:
            raise KeyError(
                f"no inverted latents at t={int(t)}; have {self.timesteps[:3]}...{self.timesteps[-3:]}"
            ) from None

    @property
    def noisiest(self) -> torch.Tensor:
        """Latents at the highest kept timestep (the starting point of editing)."""
        return self.latents[max(self.latents)]
