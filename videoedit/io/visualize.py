"""Small visualisations written into the result tree: mask overlays with a legend (and the user's
boxes/points), and labelled side-by-side grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, colour-blind friendly region colours (Okabe-Ito), cycled when there are more regions.
REGION_COLORS = np.array(
    [
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [150, 150, 150],
    ],
    dtype=np.float32,
)


def overlay_masks(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Colour each region over the frames, to check mask coverage.

    Args:
        frames: ``(F, H, W, 3)`` uint8.
        masks: ``(F, R, H, W)`` bool. Pixels covered by no region are darkened; overlaps mix colours.

    Returns:
        ``(F, H, W, 3)`` uint8.
    """
    if masks.shape[0] != frames.shape[0] or masks.shape[2:] != frames.shape[1:3]:
        raise ValueError(f"masks {masks.shape} do not match frames {frames.shape}")
    out = frames.astype(np.float32)
    m = masks.astype(np.float32)  # (F, R, H, W)
    colors = REGION_COLORS[np.arange(m.shape[1]) % len(REGION_COLORS)]  # (R, 3)
    count = m.sum(1, keepdims=True)  # (F, 1, H, W)
    color = np.einsum("frhw,rc->fhwc", m, colors) / np.maximum(count, 1).transpose(0, 2, 3, 1)
    covered = (count > 0).transpose(0, 2, 3, 1)
    out = np.where(covered, (1 - alpha) * out + alpha * color, 0.35 * out)
    return out.round().clip(0, 255).astype(np.uint8)


def region_color(index: int) -> tuple[int, int, int]:
    """The colour of region ``index`` in overlays, legends and cluster maps (cycled)."""
    return tuple(int(c) for c in REGION_COLORS[index % len(REGION_COLORS)])


def legend_bar(names: Sequence[str], width: int, frame_height: int | None = None) -> np.ndarray:
    """A black bar ``(h, width, 3)`` uint8 naming each region next to a swatch of its colour.

    Entries flow left to right and wrap onto more lines when ``width`` is too narrow; entry ``i`` has
    :func:`region_color` ``(i)``, as in :func:`overlay_masks`. The font scales with ``frame_height``
    (default ``width``), at least 9 px.
    """
    size = max(9, min(18, (frame_height or width) // 20))
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    swatch, gap, pad = size, 4, 3
    lines: list[list[tuple[int, str, float]]] = [[]]
    x = pad
    for i, name in enumerate(names):
        entry = swatch + gap + measure.textlength(str(name), font=font) + 2 * gap
        if lines[-1] and x + entry > width - pad:
            lines.append([])
            x = pad
        lines[-1].append((i, str(name), x))
        x += entry
    line_height = size + 2 * pad
    bar = Image.new("RGB", (width, line_height * len(lines)), (0, 0, 0))
    pen = ImageDraw.Draw(bar)
    for row, entries in enumerate(lines):
        top = row * line_height + pad
        for i, name, left in entries:
            pen.rectangle([left, top, left + swatch - 1, top + swatch - 1], fill=region_color(i))
            pen.text((left + swatch + gap, top), name, fill=(255, 255, 255), font=font)
    return np.asarray(bar)


def add_legend(frames: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """``(F, H, W, 3)`` frames with :func:`legend_bar` of ``names`` below them: ``(F, H + h, W, 3)``."""
    bar = legend_bar(names, frames.shape[2], frames.shape[1])
    return np.concatenate([frames, np.repeat(bar[None], len(frames), axis=0)], axis=1)


def draw_prompts(
    frame: np.ndarray,
    color: tuple[int, int, int],
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] = (),
    labels: Sequence[int] = (),
) -> np.ndarray:
    """Draw a user's box (outline) and points (filled disc = inside, cross = outside) on ``frame``.

    Args:
        frame: ``(H, W, 3)`` uint8 (a copy is drawn on and returned).
        color: the region's colour; shapes get a 1 px black outline to stay visible on any colour.
        box: ``(x0, y0, x1, y1)`` pixels; points: ``(x, y)`` pixels; labels: 1 inside, 0 outside.
    """
    image = Image.fromarray(np.ascontiguousarray(frame))
    pen = ImageDraw.Draw(image)
    thick = max(2, min(frame.shape[:2]) // 128)
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        pen.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=(0, 0, 0), width=thick + 2)
        pen.rectangle([x0, y0, x1, y1], outline=tuple(color), width=thick)
    radius = 2 * thick + 1
    for (x, y), label in zip(points, labels or [1] * len(points)):
        if label:
            pen.ellipse(
                [x - radius, y - radius, x + radius, y + radius], fill=tuple(color), outline=(0, 0, 0)
            )
        else:
            for dx in (-radius, radius):
                pen.line([x - dx, y - radius, x + dx, y + radius], fill=(0, 0, 0), width=thick + 2)
                pen.line([x - dx, y - radius, x + dx, y + radius], fill=tuple(color), width=thick)
    return np.asarray(image)


def shorten(text: str, max_chars: int = 60) -> str:
    """``text`` cut at a word boundary to at most ``max_chars`` characters, with "..." when cut."""
    text = " ".join(str(text).split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1].rsplit(" ", 1)[0] if " " in text[: max_chars - 1] else text[: max_chars - 1]
    return cut.rstrip(" ,;:") + "..."


def prompt_label(name: str, prompt: str | None, max_chars: int = 60) -> str:
    """A grid label: ``"edit0_seed0: a watercolor painting of…"`` (``name`` alone without a prompt)."""
    return f"{name}: {shorten(prompt, max_chars)}" if prompt else name


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def caption_bar(label: str, width: int, frame_height: int, wrap: bool = False) -> np.ndarray:
    """A black bar ``(h, width, 3)`` uint8 with ``label`` in white.

    Without ``wrap``: one line, sized from the frame height (``h = max(12, frame_height // 16) + 4``).
    With ``wrap``: the label is broken at spaces into as many lines as fit ``width`` (font sized from
    the width), for long labels over narrow columns.
    """
    if not wrap:
        height = max(12, frame_height // 16)
        bar = Image.new("RGB", (width, height + 4), (0, 0, 0))
        ImageDraw.Draw(bar).text((4, 2), label, fill=(255, 255, 255), font=_font(max(8, int(height * 0.75))))
        return np.asarray(bar)
    size = max(9, min(16, width // 12))
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for word in label.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and measure.textlength(candidate, font=font) <= width - 6:
            lines[-1] = candidate
        else:
            lines.append(word)
    line_height = size + 3
    bar = Image.new("RGB", (width, line_height * max(1, len(lines)) + 4), (0, 0, 0))
    pen = ImageDraw.Draw(bar)
    for i, line in enumerate(lines):
        pen.text((3, 2 + i * line_height), line, fill=(255, 255, 255), font=font)
    return np.asarray(bar)


def label_frames(frames: np.ndarray, label: str, wrap: bool = False, min_bar_height: int = 0) -> np.ndarray:
    """Add a caption bar with ``label`` above ``(F, H, W, 3)`` frames: ``(F, h + H, W, 3)``.

    ``wrap``: break long labels into lines (:func:`caption_bar`); ``min_bar_height``: pad the bar (at its
    bottom) to at least this height, to align the frames of several labelled videos.
    """
    bar = caption_bar(label, frames.shape[2], frames.shape[1], wrap)
    if bar.shape[0] < min_bar_height:
        bar = np.pad(bar, ((0, min_bar_height - bar.shape[0]), (0, 0), (0, 0)))
    bar_arr = np.repeat(bar[None], len(frames), axis=0)
    return np.concatenate([bar_arr, frames], axis=1)


def side_by_side(
    videos: Sequence[np.ndarray], labels: Sequence[str] | None = None, gap: int = 4, wrap: bool = False
) -> np.ndarray:
    """Place videos of equal length and height next to each other, optionally labelled.

    The caption bars get one height (the tallest), so the frames stay aligned; ``wrap`` breaks long
    labels into lines (:func:`caption_bar`).
    """
    if not videos:
        raise ValueError("no videos")
    lengths = {len(v) for v in videos}
    if len(lengths) != 1:
        raise ValueError(f"videos have different lengths {sorted(lengths)}")
    if labels is not None:
        pairs = list(zip(videos, labels, strict=True))
        top = max(caption_bar(lab, v.shape[2], v.shape[1], wrap).shape[0] for v, lab in pairs)
        videos = [label_frames(v, lab, wrap, top) for v, lab in pairs]
    height = max(v.shape[1] for v in videos)
    padded = []
    for i, v in enumerate(videos):
        if v.shape[1] < height:
            v = np.pad(v, ((0, 0), (0, height - v.shape[1]), (0, 0), (0, 0)))
        padded.append(v)
        if gap and i < len(videos) - 1:
            padded.append(np.full((v.shape[0], height, gap, 3), 255, dtype=np.uint8))
    return np.concatenate(padded, axis=2)


def heatmap_over_frames(
    frames: np.ndarray,
    values: np.ndarray,
    label: str,
    vmin: float = 0.0,
    vmax: float = 1.0,
    marks: dict[int, str] | None = None,
    alpha: float = 0.55,
    colormap: str = "inferno",
) -> np.ndarray:
    """A per-pixel map blended over the frames it describes, with a colour bar and marked frames.

    Each frame: ``(1 - alpha) * frame + alpha * colormap((value - vmin) / (vmax - vmin))`` (values are
    clipped to ``[vmin, vmax]`` and upsampled to the frame size by nearest neighbour, so a latent-grid
    map shows its true resolution). A panel on the right holds the colour bar (``vmax`` at the top),
    its tick values and ``label`` (wrapped). A frame listed in ``marks`` gets a white border and its
    tag (e.g. ``"anchor"``, ``"keyframe"``) in a black box at the top left; every frame shows its index
    at the bottom left.

    Args:
        frames: ``(F, H, W, 3)`` uint8 (the source under the map).
        values: ``(F, h, w)`` or ``(F, 1, h, w)`` floats (numpy or torch); ``h, w`` divide ``H, W`` or
            equal them.
        label: what the values are, with their meaning (e.g. ``"discrepancy M (1 = motion disagrees)"``).
        vmin, vmax: the colour bar's range.
        marks: frame index -> tag.
        alpha: opacity of the colours.
        colormap: a matplotlib colormap name.

    Returns:
        ``(F, H, W + panel, 3)`` uint8.
    """
    from matplotlib import colormaps

    values = np.asarray(values.detach().cpu().float() if hasattr(values, "detach") else values, np.float32)
    if values.ndim == 4 and values.shape[1] == 1:
        values = values[:, 0]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    num, height, width = frames.shape[:3]
    if values.ndim != 3 or values.shape[0] != num or height % values.shape[1] or width % values.shape[2]:
        raise ValueError(
            f"values {values.shape} must be (F, h, w) with F = {num} and h, w dividing the frame size "
            f"{(height, width)}"
        )
    if not vmax > vmin:
        raise ValueError(f"vmax must be greater than vmin, got vmin={vmin}, vmax={vmax}")
    marks = dict(marks or {})
    bad = [t for t in marks if not 0 <= t < num]
    if bad:
        raise ValueError(f"marks name frames {bad} outside the clip's {num} frames")
    lut = (colormaps[colormap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)  # (256, 3)
    norm = (np.clip(values, vmin, vmax) - vmin) / (vmax - vmin)
    up = np.repeat(np.repeat(norm, height // values.shape[1], 1), width // values.shape[2], 2)
    colour = lut[np.round(up * 255).astype(np.int64)]  # (F, H, W, 3)
    blended = ((1 - alpha) * frames.astype(np.float32) + alpha * colour).round().clip(0, 255).astype(np.uint8)

    # the panel: label on top, then the bar (vmax at the top) with three tick values to its right
    size = max(8, min(14, height // 18))
    font = _font(size)
    panel_width = max(56, width // 4)
    panel_width += (width + panel_width) % 2  # even total width (H.264)
    panel = Image.new("RGB", (panel_width, height), (0, 0, 0))
    pen = ImageDraw.Draw(panel)
    lines: list[str] = []
    for word in label.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and pen.textlength(candidate, font=font) <= panel_width - 4:
            lines[-1] = candidate
        else:
            lines.append(word)
    fit = max(1, int(height * 0.6) // (size + 2))
    if len(lines) > fit:  # too long for the panel: cut, and say so
        lines = lines[:fit]
        lines[-1] += "..."
    top = 2
    for line in lines:
        pen.text((2, top), line, fill=(255, 255, 255), font=font)
        top += size + 2
    bar_top, bar_bottom = top + size // 2 + 2, height - size // 2 - 2
    bar_width = max(6, panel_width // 5)
    if bar_bottom - bar_top >= 8:
        rows = np.linspace(1, 0, bar_bottom - bar_top)
        bar = np.repeat(lut[np.round(rows * 255).astype(np.int64)][:, None], bar_width, axis=1)
        panel.paste(Image.fromarray(bar.astype(np.uint8)), (2, bar_top))
        for frac in (1.0, 0.5, 0.0):
            y = bar_top + round((1 - frac) * (bar_bottom - bar_top - 1))
            pen.line([(2 + bar_width, y), (5 + bar_width, y)], fill=(255, 255, 255))
            pen.text((7 + bar_width, y - size // 2), f"{vmin + frac * (vmax - vmin):.3g}", fill=(255, 255, 255),
                     font=font)  # fmt: skip
    panel_arr = np.asarray(panel)

    out = np.empty((num, height, width + panel_width, 3), dtype=np.uint8)
    out[:, :, width:] = panel_arr
    border = max(1, min(height, width) // 64)
    for t in range(num):
        image = Image.fromarray(blended[t])
        draw = ImageDraw.Draw(image)
        draw.text((2, height - size - 6), str(t), fill=(255, 255, 255), font=font, stroke_width=1,
                  stroke_fill=(0, 0, 0))  # fmt: skip
        if t in marks:
            draw.rectangle([0, 0, width - 1, height - 1], outline=(255, 255, 255), width=border)
            tag_width = int(draw.textlength(marks[t], font=font)) + 4
            draw.rectangle([border, border, border + tag_width, border + size + 3], fill=(0, 0, 0))
            draw.text((border + 2, border + 1), marks[t], fill=(255, 255, 255), font=font)
        out[t, :, :width] = np.asarray(image)
    return out
