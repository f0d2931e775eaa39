"""How faithfully a method's source preparation (inversion, or only the VAE for inversion-free methods)
rebuilds the source: PSNR of the reconstruction against the source frames.

TokenFlow's users check this first when an edit goes wrong (omerbt/TokenFlow issues 12 and 14): a bad
inversion shows up as a low reconstruction PSNR before any editing setting is involved.
"""

from __future__ import annotations

import math

import numpy as np

#: reported for a bit-exact reconstruction (dB), as the preservation metrics' ``max_psnr``
MAX_PSNR = 100.0


def reconstruction_psnr(
    reference: np.ndarray, reconstruction: np.ndarray, max_psnr: float = MAX_PSNR
) -> float:
    """PSNR (dB) over every pixel of ``(F, H, W, 3)`` uint8 clips: ``10 log10(255^2 / MSE)``."""
    if reference.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {reconstruction.shape}")
    mse = float(np.mean((reference.astype(np.float64) - reconstruction.astype(np.float64)) ** 2))
    if mse == 0:
        return max_psnr
    return min(max_psnr, 10 * math.log10(255.0**2 / mse))
