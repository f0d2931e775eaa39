"""One propagation step of the weight-free ``adaptive`` mask tracker, and its parts.

:class:`AdaptiveMaskStep` carries a binary mask from frame ``t-1`` to frame ``t`` (either direction of
time) from the two flows between them, the keyframe's colour model and a local colour model:

1. **Shape prior, occlusion-aware.** The previous mask is backward-warped with the flow ``t -> t-1``
   (bilinear) and intersected with its forward *splat* along ``t-1 -> t`` (closed by a small disc):
   backward warping drags the label into pixels revealed behind a moving object (their flow is
   interpolated from the object), splatting does not. The result is blurred by ``prior_sigma`` (the
   boundary is uncertain by a few pixels). Where the two flows disagree (forward-backward check of
   Sundaram et al. 2010) within ``occlusion_band`` of the warped boundary, the pixel was hidden in
   ``t-1`` (a disocclusion, nearly always background revealed behind the object) and its prior is set
   to ``occlusion_prior``.
2. **Colour evidence, global and local.** The log-ratio of the keyframe's foreground/background RGB
   histograms (:class:`ColorModel`) is mixed (``local_weight``) with a *local* one: a ``palette_size``
   colour palette fit on the keyframe, and foreground/background palette histograms per cell of
   ``cell`` px pooled over ``(2 * cell_radius + 1)²`` cells, counted on the *anchor* frame (the last
   frame whose step was confident, see below) and Laplace-blended with the keyframe's palette
   histograms. Each pixel reads the cell its flow points to. Local models tell the road next to a car
   from the car's dark parts although both colours occur on both sides globally: this is the leak
   control against the background.
3. **Posterior and edge-aware smoothing.** ``logit(prior) + color_weight * colour`` -> probability,
   smoothed by a guided filter (He et al. 2010; grey image as guide, radius ``smooth_radius`` px at 480
   lines) so that the boundary snaps to image edges, thresholded at 0.5.
4. **Confidence and re-anchoring.** The step's confidence is the IoU of the new mask with the warped
   prior (how much the colour evidence had to move the boundary). When it is at least
   ``anchor_min_confidence``, the local colour model is re-anchored on the new frame; otherwise it stays
   on the last confident frame, so a leak cannot teach the local model that the background is the
   object.
5. **Trusted foreground** (``trusted_anchor``, default on). A confident step can still have crept a few
   pixels into similar background at the boundary, and re-anchoring on it teaches the local model that
   this background is the object, which lets the next step creep further: on a long clip the leak
   accumulates (DAVIS dance-twirl, 139 frames: the dress's mask grows into the dark-clad spectators
   behind the dancer). The tracker therefore keeps a *trusted* subset of the mask: the keyframe mask,
   carried by the same occlusion-aware warp (trusted where the warped trusted set is > 0.5 and the shape
   prior is > 0.5) and intersected with each new mask. Pixels that join the mask through colour
   evidence beyond the warped prior (boundary creep, disocclusions) are foreground but never trusted.
   Re-anchoring counts only trusted pixels as foreground and the pixels outside the mask as background;
   untrusted foreground is counted in neither class. No parameter; ``trusted_anchor=False`` re-anchors
   on the whole mask (the behaviour before 2026-12's leak control).

All parameters scale with the frame's short side (their defaults are stated at 480 lines). Costs at
854x480 on one CPU thread: ``benchmarks/bench_mask_propagation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

REFERENCE_LINES = 480  # sizes given in pixels are at this short side and scale with the frame


class ColorModel:
    """Foreground/background RGB histograms (``bins``³ cells, Laplace-smoothed) of one frame.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool foreground.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, bins: int = 16) -> None:
        self.bins = bins
        cells = self.cells(image)
        n = bins**3
        self.fg = (np.bincount(cells[mask], minlength=n) + 1.0) / (mask.sum() + n)
        self.bg = (np.bincount(cells[~mask], minlength=n) + 1.0) / ((~mask).sum() + n)
        self.log_ratio_table = (np.log(self.fg) - np.log(self.bg)).astype(np.float32)

    def cells(self, image: np.ndarray) -> np.ndarray:
        q = image.astype(np.int32) * self.bins // 256
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def likelihood_ratio(self, image: np.ndarray) -> np.ndarray:
        """``p(colour | inside) / p(colour | outside)`` per pixel, ``(H, W)`` float."""
        cells = self.cells(image)
        return self.fg[cells] / self.bg[cells]

    def log_ratio(self, image: np.ndarray) -> np.ndarray:
        """``log p(colour | inside) - log p(colour | outside)`` per pixel, ``(H, W)`` float32."""
        return self.log_ratio_table[self.cells(image)]


class Palette:
    """A ``size``-colour palette fit by k-means on a keyframe, foreground and background sampled equally.

    Colours are looked up through a table over 32³ quantised RGB cells (5 bits per channel).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool foreground (the object's colours get half the samples however small it is).
        size: number of colours.
        samples: pixels sampled for k-means.
        seed: sampling and k-means seed (deterministic palettes).
    """

    def __init__(
        self, image: np.ndarray, mask: np.ndarray, size: int = 32, samples: int = 20000, seed: int = 0
    ) -> None:
        if size < 2 or size > 256:
            raise ValueError(f"palette size must be in 2..256, got {size}")
        rng = np.random.default_rng(seed)
        pixels = image.reshape(-1, 3).astype(np.float32)
        flat = mask.reshape(-1)
        chosen = []
        for part in (np.flatnonzero(flat), np.flatnonzero(~flat)):
            if len(part):
                chosen.append(rng.choice(part, min(samples // 2, len(part)), replace=False))
        sample = pixels[np.concatenate(chosen)]
        k = min(size, len(np.unique(sample, axis=0)))
        cv2.setRNGSeed(seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
        _, _, centres = cv2.kmeans(sample, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
        self.size = size
        self.centres = centres
        levels = np.arange(32, dtype=np.float32) * 8 + 4
        grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
        dist = ((grid[:, None, :] - centres[None]) ** 2).sum(-1)
        self.table = dist.argmin(1).astype(np.int32)

    def index(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` int32 palette index of every pixel of ``image (H, W, 3)`` uint8."""
        q = (image >> 3).astype(np.int32)
        return self.table[(q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]]

    def histograms(self, index: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Laplace-smoothed foreground and background palette histograms ``(size,)`` each."""
        fg = np.bincount(index[mask], minlength=self.size) + 1.0
        bg = np.bincount(index[~mask], minlength=self.size) + 1.0
        return fg / fg.sum(), bg / bg.sum()


class LocalColorModel:
    """Foreground/background palette histograms per cell of a frame, pooled over neighbouring cells.

    Args:
        index: ``(H, W)`` palette indices of the frame.
        mask: ``(H, W)`` bool foreground.
        palette_size: number of palette colours.
        cell: cell size in pixels.
        radius: pooling radius in cells (a ``(2r+1)²`` window).
        prior_fg: ``(palette_size,)`` histogram blended in with weight ``prior_count`` pixels (the
            keyframe's; it fills cells with few pixels of a class).
        prior_bg: the same for the background.
        prior_count: pseudo-count of the blend.
        background: ``(H, W)`` bool background pixels (``None``: every pixel outside ``mask``); pixels in
            neither ``mask`` nor ``background`` are not counted.
    """

    def __init__(
        self,
        index: np.ndarray,
        mask: np.ndarray,
        palette_size: int,
        cell: int,
        radius: int,
        prior_fg: np.ndarray,
        prior_bg: np.ndarray,
        prior_count: float = 20.0,
        background: np.ndarray | None = None,
    ) -> None:
        height, width = index.shape
        self.cell = cell
        self.grid = (-(-height // cell), -(-width // cell))
        gh, gw = self.grid
        k = palette_size
        cell_id = (np.arange(height) // cell)[:, None] * gw + (np.arange(width) // cell)[None, :]
        keys = cell_id * k + index
        total = np.bincount(keys.ravel(), minlength=gh * gw * k)
        fg = np.bincount(keys[mask], minlength=gh * gw * k)
        if background is not None:
            total = fg + np.bincount(keys[background & ~mask], minlength=gh * gw * k)
        window = (2 * radius + 1, 2 * radius + 1)
        fg_counts = fg.reshape(gh, gw, k).astype(np.float32)
        bg_counts = (total - fg).reshape(gh, gw, k).astype(np.float32)
        fg_counts = cv2.boxFilter(fg_counts, -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
        bg_counts = cv2.boxFilter(bg_counts, -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
        p_fg = (fg_counts + prior_count * prior_fg) / (fg_counts.sum(-1, keepdims=True) + prior_count)
        p_bg = (bg_counts + prior_count * prior_bg) / (bg_counts.sum(-1, keepdims=True) + prior_count)
        self.table = (np.log(p_fg) - np.log(p_bg)).reshape(gh * gw, k).astype(np.float32)

    def log_ratio(self, index: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-pixel log-ratio ``(H, W)`` of palette ``index`` read in the cells at positions ``(x, y)``
        (float pixel coordinates in the model's frame, e.g. where the flow points)."""
        gh, gw = self.grid
        cy = np.clip(y.astype(np.int32) // self.cell, 0, gh - 1)
        cx = np.clip(x.astype(np.int32) // self.cell, 0, gw - 1)
        return self.table[cy * gw + cx, index]


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: ``src`` smoothed, its edges following ``guide``'s.

    Args:
        guide: ``(H, W)`` float32 in [0, 1].
        src: ``(H, W)`` float32.
        radius: box radius in pixels.
        eps: regularisation (larger = smoother, fewer edges kept).
    """
    window = (2 * radius + 1, 2 * radius + 1)
    mean_i = cv2.boxFilter(guide, -1, window)
    mean_p = cv2.boxFilter(src, -1, window)
    cov = cv2.boxFilter(guide * src, -1, window) - mean_i * mean_p
    var = cv2.boxFilter(guide * guide, -1, window) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return cv2.boxFilter(a, -1, window) * guide + cv2.boxFilter(b, -1, window)


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def forward_consistency(flow_ab: np.ndarray, flow_ba_at_target: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels whose round trip ``a -> b -> a`` fails (Sundaram et al. 2010).

    Args:
        flow_ab: ``(H, W, 2)`` flow of frame ``a`` to ``b``.
        flow_ba_at_target: ``(H, W, 2)`` flow ``b -> a`` sampled at ``p + flow_ab(p)``.
    """
    loop = flow_ab + flow_ba_at_target
    return (loop**2).sum(-1) > 0.01 * ((flow_ab**2).sum(-1) + (flow_ba_at_target**2).sum(-1)) + 0.5


def splat(mask: np.ndarray, flow: np.ndarray, close: int) -> np.ndarray:
    """Forward-splat a bool mask ``(H, W)`` along ``flow (H, W, 2)`` (nearest pixel), closed by a disc of
    radius ``close``: ``(H, W)`` bool."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    tx = np.rint(xs + flow[ys, xs, 0]).astype(np.int64)
    ty = np.rint(ys + flow[ys, xs, 1]).astype(np.int64)
    ok = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
    out = np.zeros((height, width), np.uint8)
    out[ty[ok], tx[ok]] = 1
    if close > 0:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * close + 1, 2 * close + 1))
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, disc)
    return out.astype(bool)


@dataclass
class AdaptiveParams:
    """Parameters of :class:`AdaptiveMaskStep` (see the module docstring; sizes at 480 lines)."""

    prior_sigma: float = 0.006
    color_weight: float = 1.2
    local_weight: float = 0.5
    occlusion_prior: float = 0.25
    occlusion_band: float = 0.03
    smooth_radius: int = 4
    smooth_eps: float = 1e-3
    palette_size: int = 32
    cell: int = 8
    cell_radius: int = 3
    splat_close: int = 2
    anchor_min_confidence: float = 0.9
    trusted_anchor: bool = True


class AdaptiveMaskStep:
    """The ``adaptive`` tracker from one keyframe, in one direction of time.

    Args:
        image: ``(H, W, 3)`` uint8 keyframe.
        mask: ``(H, W)`` bool keyframe mask.
        params: :class:`AdaptiveParams`.
        color: the keyframe's :class:`ColorModel` (built here when ``None``).
    """

    def __init__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: AdaptiveParams,
        color: ColorModel | None = None,
    ) -> None:
        self.p = params
        self.color = color or ColorModel(image, mask)
        height, width = mask.shape
        self.scale = min(height, width) / REFERENCE_LINES
        self.gx, self.gy = np.meshgrid(
            np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
        )
        self.palette = Palette(image, mask, params.palette_size) if params.local_weight > 0 else None
        self.mask = np.asarray(mask, dtype=bool)
        self.trusted = self.mask.copy()  # the keyframe mask carried by the warp (step 5)
        self.probability = self.mask.astype(np.float32)
        self.confidence = 1.0
        if self.palette is not None:
            index = self.palette.index(image)
            self.key_fg, self.key_bg = self.palette.histograms(index, self.mask)
            self.local = self._local_model(index, self.mask)

    def _local_model(
        self, index: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None
    ) -> LocalColorModel:
        assert self.palette is not None
        cell = max(2, round(self.p.cell * self.scale))
        return LocalColorModel(
            index,
            mask,
            self.palette.size,
            cell,
            self.p.cell_radius,
            self.key_fg,
            self.key_bg,
            background=background,
        )

    def __call__(self, image: np.ndarray, flow_to_prev: np.ndarray, flow_from_prev: np.ndarray) -> np.ndarray:
        """The mask of the next frame; also sets ``probability`` and ``confidence``.

        Args:
            image: ``(H, W, 3)`` uint8, the frame we go to.
            flow_to_prev: ``(H, W, 2)`` float32 flow from ``image``'s frame to the previous one.
            flow_from_prev: ``(H, W, 2)`` float32 flow from the previous frame to ``image``'s.

        Returns:
            ``(H, W)`` bool.
        """
        p = self.p
        short = min(image.shape[:2])
        mx = self.gx + flow_to_prev[..., 0]
        my = self.gy + flow_to_prev[..., 1]
        warped = cv2.remap(
            self.mask.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        shape = np.minimum(warped, splat(self.mask, flow_from_prev, round(p.splat_close * self.scale)))
        prior = cv2.GaussianBlur(shape.astype(np.float32), (0, 0), p.prior_sigma * short)
        if p.occlusion_band > 0:
            back = cv2.remap(flow_from_prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            occluded = forward_consistency(flow_to_prev, back)
            inside = (shape > 0.5).astype(np.uint8)
            dist = np.where(
                inside > 0,
                cv2.distanceTransform(inside, cv2.DIST_L2, 3),
                cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3),
            )
            occluded &= dist < p.occlusion_band * short
            soft = cv2.GaussianBlur(occluded.astype(np.float32), (0, 0), 2 * self.scale)
            prior = prior + soft * (p.occlusion_prior - prior)
        colour = self.color.log_ratio(image)
        index = None
        if self.palette is not None:
            index = self.palette.index(image)
            local = self.local.log_ratio(index, mx, my)
            colour = (1 - p.local_weight) * colour + p.local_weight * local
        posterior = 1.0 / (1.0 + np.exp(-(logit(prior) + p.color_weight * colour)))
        posterior = posterior.astype(np.float32)
        if p.smooth_radius > 0:
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
            radius = max(1, round(p.smooth_radius * self.scale))
            posterior = guided_filter(grey, posterior, radius, p.smooth_eps)
        mask = posterior > 0.5
        union = np.logical_or(mask, warped > 0.5).sum()
        self.confidence = float(np.logical_and(mask, warped > 0.5).sum() / union) if union else 1.0
        if p.trusted_anchor:
            carried = cv2.remap(
                self.trusted.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            self.trusted = (carried > 0.5) & (shape > 0.5) & mask
        if index is not None and self.confidence >= p.anchor_min_confidence:
            if p.trusted_anchor:
                self.local = self._local_model(index, self.trusted, ~mask)
            else:
                self.local = self._local_model(index, mask)
        self.mask, self.probability = mask, np.clip(posterior, 0.0, 1.0)
        return mask
