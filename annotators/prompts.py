"""Region prompts for video masks: clicked points, boxes or mask images on keyframes.

A small YAML file (or the equivalent command-line options of ``python -m annotators.masks``)::

    background: bg        # optional: add a region covering what no other region covers
    disjoint: true        # optional: a pixel in several regions goes to the smallest (parts win)
    regions:
      man:
        - frame: 0                       # index of the frame in the clip
          points: [[412, 200], [420, 300]]   # (x, y) pixels of the clip's own frames
          labels: [1, 1]                 # optional: 1 = inside (default), 0 = outside
          box: [350, 100, 500, 470]      # optional: x0, y0, x1, y1
      eyes:
        - {frame: 0, box: [400, 120, 440, 140]}
      car:
        - {frame: 0, mask: car_00000.png}   # a mask image (relative to the YAML file)

Regions keep their order (= the order of the local prompts). Every problem (a point outside the frame,
a keyframe past the end of the clip or not among the frames read, an unknown region, a region with
nothing to segment from) raises :class:`videoedit.errors.MaskError` saying what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from videoedit.errors import MaskError


@dataclass(frozen=True)
class KeyframePrompt:
    """What the user gave for one region on one keyframe.

    Attributes:
        frame: index of the keyframe in the clip.
        points: ``(x, y)`` pixel coordinates.
        labels: one per point: 1 = inside the region, 0 = outside.
        box: ``(x0, y0, x1, y1)`` pixels, or ``None``.
        mask: path of a mask image (non-zero = inside), or ``None``.
    """

    frame: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frame": self.frame}
        if self.points:
            out["points"] = [list(p) for p in self.points]
            out["labels"] = list(self.labels)
        if self.box is not None:
            out["box"] = list(self.box)
        if self.mask is not None:
            out["mask"] = self.mask
        return out

    def read_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The mask image as ``(H, W)`` bool (must have the frames' size ``(H, W)``)."""
        path = Path(self.mask or "")
        if not path.is_file():
            raise MaskError(f"Mask image {path} (keyframe {self.frame}) not found.")
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) > 0
        if mask.shape != tuple(size):
            raise MaskError(
                f"Mask image {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but the frames are "
                f"{size[1]}x{size[0]}."
            )
        return mask


def _parse_keyframe(region: str, item: Any, base: Path | None) -> KeyframePrompt:
    if not isinstance(item, Mapping):
        raise MaskError(f"Region '{region}': each keyframe must be a mapping with 'frame', got {item!r}.")
    unknown = set(item) - {"frame", "points", "labels", "box", "mask"}
    if unknown:
        raise MaskError(
            f"Region '{region}': unknown key(s) {sorted(unknown)}; use frame, points, labels, box, mask."
        )
    if "frame" not in item:
        raise MaskError(f"Region '{region}': a keyframe needs 'frame' (its index in the clip).")
    try:
        frame = int(item["frame"])
        points = tuple((float(p[0]), float(p[1])) for p in (item.get("points") or []))
        if any(len(p) != 2 for p in item.get("points") or []):
            raise ValueError("points are [x, y] pairs")
        labels = tuple(int(v) for v in (item.get("labels") or [1] * len(points)))
        box = item.get("box")
        box = tuple(float(v) for v in box) if box is not None else None
    except (TypeError, ValueError, IndexError) as err:
        raise MaskError(f"Region '{region}': could not read keyframe {dict(item)!r}: {err}.") from err
    if len(labels) != len(points):
        raise MaskError(
            f"Region '{region}', frame {frame}: {len(points)} points but {len(labels)} labels "
            "(give one label per point, 1 = inside, 0 = outside)."
        )
    if any(v not in (0, 1) for v in labels):
        raise MaskError(f"Region '{region}', frame {frame}: labels must be 1 (inside) or 0 (outside).")
    if box is not None and len(box) != 4:
        raise MaskError(f"Region '{region}', frame {frame}: a box is [x0, y0, x1, y1], got {list(box)}.")
    mask = item.get("mask")
    if mask is not None:
        mask_path = Path(str(mask)).expanduser()
        if base is not None and not mask_path.is_absolute():
            mask_path = base / mask_path
        mask = str(mask_path)
    if not points and box is None and mask is None:
        raise MaskError(
            f"Region '{region}', frame {frame}: nothing to segment from: give points, a box or a mask."
        )
    return KeyframePrompt(frame, points, labels, box, mask)


@dataclass
class RegionPrompts:
    """Prompts of every region (in order), plus the background/disjoint options."""

    regions: dict[str, list[KeyframePrompt]] = field(default_factory=dict)
    background: str | None = None
    disjoint: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: str | Path | None = None) -> RegionPrompts:
        """From the YAML structure (see the module docstring); mask paths are relative to ``base``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("regions"), Mapping):
            raise MaskError("Mask prompts need a 'regions:' mapping of region name -> keyframes.")
        unknown = set(data) - {"regions", "background", "disjoint"}
        if unknown:
            raise MaskError(
                f"Unknown key(s) {sorted(unknown)} in mask prompts; use regions, background, disjoint."
            )
        base_path = Path(base) if base is not None else None
        regions: dict[str, list[KeyframePrompt]] = {}
        for name, items in data["regions"].items():
            items = [items] if isinstance(items, Mapping) else list(items or [])
            if not items:
                raise MaskError(f"Region '{name}' has no keyframe prompt.")
            regions[str(name)] = [_parse_keyframe(str(name), it, base_path) for it in items]
        if not regions:
            raise MaskError("Mask prompts define no region.")
        background = data.get("background")
        if background is not None and str(background) in regions:
            raise MaskError(f"The background region '{background}' is also a prompted region: rename one.")
        return cls(regions, str(background) if background else None, bool(data.get("disjoint", False)))

    @classmethod
    def from_yaml(cls, path: str | Path) -> RegionPrompts:
        path = Path(path)
        if not path.is_file():
            raise MaskError(f"Mask prompt file {path} not found.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise MaskError(f"Could not parse {path}: {err}") from err
        return cls.from_mapping(data or {}, base=path.parent)

    @classmethod
    def load(cls, prompts: str | Path | Mapping[str, Any] | RegionPrompts) -> RegionPrompts:
        """From a YAML path, a mapping (e.g. a Hydra node) or an existing object."""
        if isinstance(prompts, RegionPrompts):
            return prompts
        if isinstance(prompts, Mapping):
            return cls.from_mapping(prompts)
        return cls.from_yaml(prompts)

    @classmethod
    def from_cli(
        cls,
        points: Sequence[str] = (),
        boxes: Sequence[str] = (),
        masks: Sequence[str] = (),
        background: str | None = None,
        disjoint: bool = False,
    ) -> RegionPrompts:
        """From ``REGION:FRAME:X,Y[,LABEL]`` points, ``REGION:FRAME:X0,Y0,X1,Y1`` boxes and
        ``REGION:FRAME:PATH`` mask images (the options of ``python -m annotators.masks``)."""
        collected: dict[str, dict[int, dict[str, Any]]] = {}

        def split(spec: str, what: str) -> tuple[str, int, str]:
            parts = spec.split(":", 2)
            if len(parts) != 3 or not parts[0]:
                raise MaskError(f"Bad {what} {spec!r}: expected REGION:FRAME:VALUES.")
            try:
                return parts[0], int(parts[1]), parts[2]
            except ValueError as err:
                raise MaskError(f"Bad {what} {spec!r}: the frame must be an integer.") from err

        def numbers(spec: str, text: str, what: str) -> list[float]:
            try:
                return [float(v) for v in text.split(",")]
            except ValueError as err:
                raise MaskError(f"Bad {what} {spec!r}: values must be numbers separated by commas.") from err

        for spec in points:
            region, frame, text = split(spec, "point")
            values = numbers(spec, text, "point")
            if len(values) not in (2, 3):
                raise MaskError(f"Bad point {spec!r}: expected X,Y or X,Y,LABEL.")
            entry = collected.setdefault(region, {}).setdefault(frame, {"frame": frame})
            entry.setdefault("points", []).append(values[:2])
            entry.setdefault("labels", []).append(int(values[2]) if len(values) == 3 else 1)
        for spec in boxes:
            region, frame, text = split(spec, "box")
            values = numbers(spec, text, "box")
            if len(values) != 4:
                raise MaskError(f"Bad box {spec!r}: expected X0,Y0,X1,Y1.")
            collected.setdefault(region, {}).setdefault(frame, {"frame": frame})["box"] = values
        for spec in masks:
            region, frame, text = split(spec, "mask")
            collected.setdefault(region, {}).setdefault(frame, {"frame": frame})["mask"] = text
        if not collected:
            raise MaskError("No region prompt given: use --prompts FILE or --point/--box/--mask.")
        data = {
            "regions": {r: list(frames.values()) for r, frames in collected.items()},
            "background": background,
            "disjoint": disjoint,
        }
        return cls.from_mapping(data)

    # ------------------------------------------------------------------ use
    @property
    def names(self) -> list[str]:
        """Prompted regions, then the background region when there is one."""
        return [*self.regions, *([self.background] if self.background else [])]

    def select(self, regions: Sequence[str] | None) -> RegionPrompts:
        """Only ``regions`` (in that order; the background name is allowed); raises for unknown ones."""
        if not regions:
            return self
        unknown = [r for r in regions if r not in self.names]
        if unknown:
            raise MaskError(f"Unknown region(s) {unknown}: the prompts define {self.names}.")
        kept = {r: self.regions[r] for r in regions if r in self.regions}
        background = self.background if self.background in regions else None
        return RegionPrompts(kept, background, self.disjoint)

    def validate(self, indices: Sequence[int], total_frames: int, size: tuple[int, int]) -> None:
        """Check keyframes and coordinates against the frames read.

        Args:
            indices: clip index of each frame read.
            total_frames: number of frames in the whole clip.
            size: ``(H, W)`` of the frames (the coordinates' space).
        """
        height, width = size
        read = set(indices)
        for region, keyframes in self.regions.items():
            for kf in keyframes:
                where = f"region '{region}', keyframe {kf.frame}"
                if kf.frame < 0 or kf.frame >= total_frames:
                    raise MaskError(
                        f"Keyframe {kf.frame} of region '{region}' is past the end of the clip "
                        f"({total_frames} frames: indices 0..{total_frames - 1})."
                    )
                if kf.frame not in read:
                    shown = ", ".join(str(i) for i in list(indices)[:8])
                    raise MaskError(
                        f"Keyframe {kf.frame} of region '{region}' is not among the frames read "
                        f"({shown}{', ...' if len(indices) > 8 else ''}): pick one of them or change "
                        "the start/stride."
                    )
                for x, y in kf.points:
                    if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                        raise MaskError(
                            f"Point ({x:g}, {y:g}) of {where} is outside the frame ({width}x{height}: x in "
                            f"[0, {width - 1}], y in [0, {height - 1}]). Coordinates are pixels of the "
                            "clip's own frames, (x, y) = (column, row)."
                        )
                if kf.box is not None:
                    x0, y0, x1, y1 = kf.box
                    if not (x0 < x1 and y0 < y1):
                        raise MaskError(f"Box {list(kf.box)} of {where} is empty: need x0 < x1 and y0 < y1.")
                    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                        raise MaskError(
                            f"Box {list(kf.box)} of {where} is outside the frame ({width}x{height})."
                        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (cache keys, logs)."""
        return {
            "regions": {r: [kf.to_dict() for kf in kfs] for r, kfs in self.regions.items()},
            "background": self.background,
            "disjoint": self.disjoint,
        }
