"""Single-shape images (easy-VQA style): segment the shape, read its colour and kind from
the pixels, and draw shapes back anti-aliased.

An easy-VQA image is one flat background colour (tinted, not always white) with one
anti-aliased shape in one of eight CSS colours. Segmentation does not threshold against
white: the background is the most common border colour, and every pixel is described as
a blend `background + alpha * (colour - background)`. Edits rewrite that blend (new colour,
alpha = 0, shifted alpha), so anti-aliased edges stay anti-aliased and pixels the shape
never touched keep their exact bytes.

`Region`s are `(x0, y0, x1, y1)` in pixels, end-exclusive (the pair format's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from contextrl.errors import MiningError

Region = tuple[int, int, int, int]
ShapeKind = Literal["circle", "rectangle", "triangle"]
SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "black": (0, 0, 0),
    "gray": (128, 128, 128), "teal": (0, 128, 128), "brown": (165, 42, 42), "yellow": (255, 255, 0),
}
"""easy-VQA's eight shape colours (CSS named colours, as found in its images)."""
SUPERSAMPLE = 4
"""Shapes are drawn at this many times the resolution and averaged down (anti-aliasing)."""


@dataclass(frozen=True, eq=False)
class Shape:
    """The one shape of a flat-background image, as a blend over the background."""

    background: tuple[int, int, int]
    colour_rgb: tuple[int, int, int]
    alpha: np.ndarray
    """H x W float32 in [0, 1]: how much of the shape colour each pixel holds."""
    mask: np.ndarray
    """H x W bool: the pixels that differ from the background (the shape and its edges)."""

    @property
    def bbox(self) -> Region:
        """Bounding box of every pixel the shape touches."""
        return mask_bbox(self.mask)

    @property
    def colour(self) -> str:
        """The nearest easy-VQA colour name."""
        return nearest_colour(self.colour_rgb)

    @property
    def kind(self) -> str:
        """circle / rectangle / triangle, from how much of its (sub-pixel) bounding box the
        shape covers: about 1.0, pi/4 and 1/2 (small triangles up to 0.7). Width and height are the largest row and column
        sums of alpha, so anti-aliased edges count by how much they are covered."""
        area = float(self.alpha.sum())
        width, height = float(self.alpha.sum(axis=1).max()), float(self.alpha.sum(axis=0).max())
        if area < 1.0 or width * height == 0.0:
            return "unknown"
        fill = area / (width * height)
        return "rectangle" if fill > 0.9 else "circle" if fill > 0.74 else "triangle"


def as_rgb(image: Image.Image) -> np.ndarray:
    """H x W x 3 uint8 copy of an image (any mode)."""
    return np.array(image.convert("RGB"), dtype=np.uint8)


def mask_bbox(mask: np.ndarray) -> Region:
    """End-exclusive bounding box of a boolean mask; (0, 0, 0, 0) when it is empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def changed_mask(a: np.ndarray, b: np.ndarray, threshold: int = 0) -> np.ndarray:
    """H x W mask of the pixels whose largest channel difference between two same-size RGB
    arrays exceeds `threshold` (0: any change)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > threshold


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    """The easy-VQA colour name nearest to `rgb` (Euclidean in RGB)."""
    v = np.asarray(rgb, dtype=np.float32)
    return min(PALETTE, key=lambda n: float(((np.asarray(PALETTE[n], dtype=np.float32) - v) ** 2).sum()))


def background_of(arr: np.ndarray, min_border_fraction: float = 0.6, flat_tolerance: int = 8) -> tuple[tuple[int, int, int], int] | None:
    """The background colour (per-channel median of the border) and the border's noise level
    (99th percentile of how far its flat pixels stray from it, 0 for a clean image); None when
    fewer than `min_border_fraction` of the border pixels lie within `flat_tolerance` of it."""
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).astype(np.int16)
    bg = np.rint(np.median(border, axis=0)).astype(np.int16)
    dev = np.abs(border - bg).max(axis=1)
    flat = dev <= flat_tolerance
    if flat.mean() < min_border_fraction:
        return None
    return tuple(int(c) for c in bg), int(np.percentile(dev[flat], 99))


def segment_shape(image: Image.Image, tolerance: int = 3) -> Shape | None:
    """Segment the single shape of a flat-background image; None when there is no shape.

    A pixel belongs to the shape when it differs from the background by more than
    `tolerance`, raised above the border's noise level for noisy images (a diffusion
    editor's output is never exactly flat). The shape colour is the median of its core (the
    pixels at least half as far from the background as the farthest), so anti-aliased edges
    and noise do not shift it. Raises MiningError when the image has no flat background (not
    a single-shape image: give the edit a region instead)."""
    arr = as_rgb(image)
    found = background_of(arr)
    if found is None:
        raise MiningError("segment_shape: the image border is not one flat colour, so it is not a single-shape "
                          "(easy-VQA style) image; give the edit an explicit region")
    bg, noise = found
    diff = np.abs(arr.astype(np.int16) - np.asarray(bg, dtype=np.int16)).max(axis=2)
    mask = diff > max(tolerance, noise + 2)
    if not mask.any():
        return None
    core = mask & (diff >= diff.max() / 2.0)
    colour = tuple(int(c) for c in np.rint(np.median(arr[core], axis=0)))
    alpha = blend_alpha(arr, bg, colour)
    alpha[~mask] = 0.0
    return Shape(background=bg, colour_rgb=colour, alpha=alpha, mask=mask)


def blend_alpha(arr: np.ndarray, bg: tuple[int, int, int], colour: tuple[int, int, int]) -> np.ndarray:
    """Per pixel, the alpha in [0, 1] that best explains it as `bg + alpha * (colour - bg)`."""
    d = np.asarray(colour, dtype=np.float32) - np.asarray(bg, dtype=np.float32)
    denom = float((d * d).sum())
    if denom == 0.0:
        return np.zeros(arr.shape[:2], dtype=np.float32)
    proj = ((arr.astype(np.float32) - np.asarray(bg, dtype=np.float32)) * d).sum(axis=2) / denom
    return np.clip(proj, 0.0, 1.0).astype(np.float32)


def composite(base: np.ndarray, bg: tuple[int, int, int], colour: tuple[int, int, int], alpha: np.ndarray,
              where: np.ndarray) -> np.ndarray:
    """`base` with the pixels in `where` replaced by `bg + alpha * (colour - bg)` (rounded)."""
    out = base.copy()
    b = np.asarray(bg, dtype=np.float32)
    blend = b + alpha[..., None] * (np.asarray(colour, dtype=np.float32) - b)
    out[where] = np.clip(np.rint(blend[where]), 0, 255).astype(np.uint8)
    return out


def shift_array(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`a` moved by (dx, dy) pixels; what moves out is dropped, what comes in is zero."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def shape_alpha(kind: str, centre: tuple[float, float], size: int, canvas: tuple[int, int]) -> np.ndarray:
    """An anti-aliased alpha map (H x W float32) of a shape drawn the way easy-VQA draws them:
    a circle of diameter `size`, a rectangle `size` wide and 0.6 * `size` tall, or an upright
    triangle with a base of `size`. The shape is kept inside the canvas."""
    if kind not in SHAPES:
        raise MiningError(f"shape_alpha: kind={kind!r} is not one of {SHAPES}")
    w, h = canvas
    size = max(4, min(int(size), w - 2, h - 2))
    half_w = size / 2.0
    half_h = {"circle": size / 2.0, "rectangle": 0.3 * size, "triangle": 0.433 * size}[kind]
    cx = min(max(centre[0], half_w + 1), w - half_w - 1)
    cy = min(max(centre[1], half_h + 1), h - half_h - 1)
    k = SUPERSAMPLE
    big = Image.new("L", (w * k, h * k), 0)
    draw = ImageDraw.Draw(big)
    box = [(cx - half_w) * k, (cy - half_h) * k, (cx + half_w) * k - 1, (cy + half_h) * k - 1]
    if kind == "circle":
        draw.ellipse(box, fill=255)
    elif kind == "rectangle":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2.0, box[1])], fill=255)
    return np.asarray(big.resize((w, h), Image.BOX), dtype=np.float32) / 255.0


__all__ = [
    "PALETTE", "SHAPES", "Region", "Shape", "ShapeKind", "as_rgb", "background_of", "changed_mask", "blend_alpha", "composite",
    "mask_bbox", "nearest_colour", "segment_shape", "shape_alpha", "shift_array",
]
