"""A small deterministic chart renderer (bar charts, seven-segment digits) and its readers.

Charts are drawn with PIL rectangles only: no fonts, no anti-aliasing, so the same values
give the same bytes on every machine and a reader can recover the values exactly from the
pixels. That is what makes `set_bar` / `set_digit` edits verifiable: the editor reads the
chart, checks that re-rendering it reproduces the input pixel for pixel (so it never
"edits" a chart it does not understand), re-renders with one bar or digit changed, and the
changed pixels lie inside that one bar's column or that digit's changed segments.

Bars are numbered from 1, left to right (the question says "bar k (from the left)").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from contextrl.errors import MiningError

Region = tuple[int, int, int, int]
WHITE, GRID, AXIS, BAR, INK = (255, 255, 255), (225, 225, 225), (40, 40, 40), (31, 119, 180), (20, 20, 20)


@dataclass(frozen=True)
class BarChartLayout:
    """Geometry of a bar chart: `n_bars` bars of integer values 0..`max_value`."""

    n_bars: int = 5
    max_value: int = 9
    unit: int = 10
    """Pixels per unit of value (gridlines every unit)."""
    bar_width: int = 18
    gap: int = 10
    margin: int = 10

    @property
    def size(self) -> tuple[int, int]:
        return (2 * self.margin + self.n_bars * (self.bar_width + self.gap) + self.gap,
                2 * self.margin + (self.max_value + 1) * self.unit)

    @property
    def baseline(self) -> int:
        """y of the first row below the bars (the x axis)."""
        return self.size[1] - self.margin

    def slot(self, k: int) -> tuple[int, int]:
        """x0, x1 (end-exclusive) of bar `k` (1-based)."""
        if not 1 <= k <= self.n_bars:
            raise MiningError(f"bar={k} is out of range: this chart has bars 1..{self.n_bars}")
        x0 = self.margin + self.gap + (k - 1) * (self.bar_width + self.gap)
        return x0, x0 + self.bar_width


def render_bar_chart(values: Sequence[int], layout: BarChartLayout = BarChartLayout()) -> Image.Image:
    """An RGB bar chart of `values` (one per bar, integers in 0..max_value)."""
    if len(values) != layout.n_bars or not all(isinstance(v, int) and 0 <= v <= layout.max_value for v in values):
        raise MiningError(f"render_bar_chart: values={list(values)!r} must be {layout.n_bars} integers in 0..{layout.max_value}")
    w, h = layout.size
    im = Image.new("RGB", (w, h), WHITE)
    draw = ImageDraw.Draw(im)
    base = layout.baseline
    for v in range(1, layout.max_value + 1):
        draw.line([(layout.margin, base - v * layout.unit), (w - layout.margin - 1, base - v * layout.unit)], fill=GRID)
    for k, v in enumerate(values, 1):
        x0, x1 = layout.slot(k)
        if v:
            draw.rectangle([x0, base - v * layout.unit, x1 - 1, base - 1], fill=BAR)
    draw.line([(layout.margin, base), (w - layout.margin - 1, base)], fill=AXIS)
    draw.line([(layout.margin, layout.margin), (layout.margin, base)], fill=AXIS)
    return im


def read_bar_chart(image: Image.Image, layout: BarChartLayout = BarChartLayout()) -> list[int] | None:
    """The bar values of a chart drawn by `render_bar_chart`, or None if `image` is not one
    (wrong size, or re-rendering the values read does not reproduce it exactly)."""
    if image.size != layout.size:
        return None
    arr = np.asarray(image.convert("RGB"))
    base, values = layout.baseline, []
    for k in range(1, layout.n_bars + 1):
        x0, x1 = layout.slot(k)
        col = np.all(arr[:base, (x0 + x1) // 2] == BAR, axis=1)
        values.append(min(int(col.sum()) // layout.unit, layout.max_value))
    if not np.array_equal(np.asarray(render_bar_chart(values, layout)), arr):
        return None
    return values


def bar_region(layout: BarChartLayout, k: int, old: int, new: int) -> Region:
    """The pixels that change when bar `k` goes from `old` to `new`: its column between the two heights."""
    x0, x1 = layout.slot(k)
    base = layout.baseline
    return (x0, base - max(old, new) * layout.unit, x1, base - min(old, new) * layout.unit)


# --------------------------------------------------------------------------- digits

SEGMENTS: dict[int, str] = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc",
                            7: "abc", 8: "abcdefg", 9: "abcdfg"}
"""Seven-segment encoding: a top, b upper right, c lower right, d bottom, e lower left, f upper left, g middle."""


@dataclass(frozen=True)
class DigitLayout:
    """Geometry of a seven-segment digit image."""

    width: int = 64
    height: int = 96
    thickness: int = 8
    margin: int = 12

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def segment(self, name: str) -> Region:
        """End-exclusive rectangle of one segment."""
        m, t, w, h = self.margin, self.thickness, self.width, self.height
        mid = h // 2
        left, right = m, w - m
        return {
            "a": (left, m, right, m + t), "g": (left, mid - t // 2, right, mid + t - t // 2), "d": (left, h - m - t, right, h - m),
            "f": (left, m, left + t, mid), "b": (right - t, m, right, mid),
            "e": (left, mid, left + t, h - m), "c": (right - t, mid, right, h - m),
        }[name]


def render_digit(digit: int, layout: DigitLayout = DigitLayout()) -> Image.Image:
    """An RGB image of `digit` (0..9) as seven-segment ink on white."""
    if not isinstance(digit, int) or digit not in SEGMENTS:
        raise MiningError(f"render_digit: digit={digit!r} must be an integer 0..9")
    im = Image.new("RGB", layout.size, WHITE)
    draw = ImageDraw.Draw(im)
    for s in SEGMENTS[digit]:
        x0, y0, x1, y1 = layout.segment(s)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=INK)
    return im


def read_digit(image: Image.Image, layout: DigitLayout = DigitLayout()) -> int | None:
    """The digit of an image drawn by `render_digit`, or None if it is not one."""
    if image.size != layout.size:
        return None
    arr = np.asarray(image.convert("RGB"))
    lit = set()
    for s in "abcdefg":
        x0, y0, x1, y1 = layout.segment(s)
        # sample the part of the segment no other segment overlaps
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        if np.array_equal(arr[cy, cx], INK):
            lit.add(s)
    for d, segs in SEGMENTS.items():
        if set(segs) == lit and np.array_equal(np.asarray(render_digit(d, layout)), arr):
            return d
    return None


def digit_region(layout: DigitLayout, old: int, new: int) -> Region:
    """Bounding box of the segments that differ between `old` and `new`."""
    changed = set(SEGMENTS[old]) ^ set(SEGMENTS[new])
    rects = [layout.segment(s) for s in changed] or [(0, 0, 0, 0)]
    return (min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects))


__all__ = [
    "BarChartLayout", "DigitLayout", "SEGMENTS", "bar_region", "digit_region", "read_bar_chart", "read_digit",
    "render_bar_chart", "render_digit",
]
