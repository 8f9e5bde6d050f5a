"""Answer oracle: parse the questions the edit miner can handle and answer them from pixels.

The miner never trusts an edit's intent alone. After an edit it asks this oracle what the
edited image's answer is, and keeps the pair only when that answer equals the one the edit
was meant to produce and differs from the original (the "the answer must change" gate).
It also answers the original image, so an item whose stored answer disagrees with its own
pixels is dropped instead of producing a pair built on a wrong label.

Questions understood (lower-cased, trailing "?" required):
- easy-VQA: "what color is the shape/circle?", "what is the color of the triangle?",
  "what shape is in the image?", "what is the blue shape?", presence questions about a
  colour or a shape ("is there a red shape?", "is no circle present?",
  "does the image not contain a triangle?", ...);
- general images: "what colour is the region (x0, y0, x1, y1)?" (a colour name of the
  region's dominant hue: `REGION_HUES`, or black / gray / white when it is dark or dull);
- charts (drawn by `charts`): "what is the value of bar k (from the left)?", "what digit is shown?".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from contextrl.miner.image.charts import BarChartLayout, DigitLayout, read_bar_chart, read_digit
from contextrl.miner.image.shapes import PALETTE, SHAPES, Region, as_rgb, segment_shape

QuestionKind = Literal["colour", "shape", "has_colour", "has_shape", "region_colour", "bar_value", "digit"]
REGION_HUES: dict[str, float] = {"red": 0.0, "orange": 30.0, "yellow": 58.0, "green": 115.0, "teal": 180.0,
                                 "blue": 225.0, "purple": 275.0, "pink": 320.0}
"""Hue (degrees) of each colour name a region of a general image can be called or recoloured to."""
REGION_GREYS: tuple[str, ...] = ("black", "gray", "white")
DIGIT_QUESTION = "what digit is shown?"

_C = "|".join(PALETTE)
_S = "|".join(SHAPES)
_PATTERNS: list[tuple[re.Pattern, QuestionKind, bool]] = [
    (re.compile(rf"^what colou?r is the (shape|{_S})\?$"), "colour", False),
    (re.compile(rf"^what is the colou?r of the (shape|{_S})\?$"), "colour", False),
    (re.compile(r"^what shape (?:is in the image|does the image contain|is present)\?$"), "shape", False),
    (re.compile(rf"^what is the ({_C}) shape\?$"), "shape", False),
    (re.compile(rf"^(?:is there a|is a|does the image contain a) ({_C}) shape(?: present| in the image)?\?$"), "has_colour", False),
    (re.compile(rf"^(?:is there not a|is no|does the image not contain a) ({_C}) shape(?: present| in the image)?\?$"), "has_colour", True),
    (re.compile(rf"^(?:is there a|is a|does the image contain a) ({_S})(?: present| in the image)?\?$"), "has_shape", False),
    (re.compile(rf"^(?:is there not a|is no|does the image not contain a) ({_S})(?: present| in the image)?\?$"), "has_shape", True),
]
_REGION_RE = re.compile(r"^what colou?r is the region \((\d+), ?(\d+), ?(\d+), ?(\d+)\)\?$")
_BAR_RE = re.compile(r"^what is the value of bar (\d+)(?: \(from the left\))?\?$")


@dataclass(frozen=True)
class Question:
    """A parsed question: what it asks, about which colour/shape/region/bar."""

    kind: QuestionKind
    target: str | None = None
    """The colour or shape the question names ("circle" in "what color is the circle?"), if any."""
    negated: bool = False
    """Presence questions asked the negative way ("is there not a ...?"): yes means absent."""
    region: Region | None = None
    bar: int | None = None


def parse_question(text: str) -> Question | None:
    """The parsed question, or None when the oracle cannot answer this kind of question."""
    q = " ".join(text.strip().lower().split())
    for pattern, kind, negated in _PATTERNS:
        m = pattern.match(q)
        if m:
            target = m.group(1) if m.groups() else None
            return Question(kind, None if target == "shape" else target, negated)
    m = _REGION_RE.match(q)
    if m:
        x0, y0, x1, y1 = (int(v) for v in m.groups())
        return Question("region_colour", region=(x0, y0, x1, y1)) if x0 < x1 and y0 < y1 else None
    m = _BAR_RE.match(q)
    if m:
        return Question("bar_value", bar=int(m.group(1)))
    return Question("digit") if q == DIGIT_QUESTION else None


def region_question(region: Region) -> str:
    """The canonical question about a region's colour."""
    return "what colour is the region ({}, {}, {}, {})?".format(*region)


def bar_question(k: int) -> str:
    """The canonical question about bar `k` (1-based, from the left)."""
    return f"what is the value of bar {k} (from the left)?"


def region_colour_name(rgb: np.ndarray) -> str:
    """The colour name of an H x W x 3 uint8 patch: black when dark (mean value < 0.2), gray or
    white when dull (mean saturation < 0.25), else the `REGION_HUES` name nearest to the
    saturation-weighted circular mean hue."""
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(rgb.reshape(-1, 1, 3)).reshape(-1, 3)
    s, v = hsv[:, 1], hsv[:, 2]
    if v.mean() < 0.2:
        return "black"
    if s.mean() < 0.25:
        return "white" if v.mean() > 0.8 else "gray"
    ang = hsv[:, 0] * 2 * np.pi
    hue = float(np.degrees(np.arctan2((s * np.sin(ang)).sum(), (s * np.cos(ang)).sum()))) % 360.0
    return min(REGION_HUES, key=lambda n: min(abs(hue - REGION_HUES[n]), 360.0 - abs(hue - REGION_HUES[n])))


def answer_from_pixels(image: Image.Image, question: Question, *, bar_layout: BarChartLayout = BarChartLayout(),
                       digit_layout: DigitLayout = DigitLayout()) -> str | None:
    """The answer `image`'s pixels give to `question`, or None when it cannot be read (not a
    single-shape image, no shape of the kind the question names, not a chart we drew...)."""
    from contextrl.errors import MiningError

    if question.kind == "region_colour":
        x0, y0, x1, y1 = question.region
        arr = as_rgb(image)
        if x1 > arr.shape[1] or y1 > arr.shape[0]:
            return None
        return region_colour_name(arr[y0:y1, x0:x1])
    if question.kind == "bar_value":
        values = read_bar_chart(image, bar_layout)
        return None if values is None or not 1 <= (question.bar or 0) <= len(values) else str(values[question.bar - 1])
    if question.kind == "digit":
        d = read_digit(image, digit_layout)
        return None if d is None else str(d)
    try:
        shape = segment_shape(image)
    except MiningError:
        return None
    if question.kind in ("colour", "shape"):
        if shape is None:
            return None
        if question.kind == "colour":
            return shape.colour if question.target in (None, shape.kind) else None
        return shape.kind if question.target in (None, shape.colour) else None
    present = shape is not None and question.target == (shape.colour if question.kind == "has_colour" else shape.kind)
    return "yes" if present != question.negated else "no"


__all__ = [
    "DIGIT_QUESTION", "Question", "QuestionKind", "REGION_GREYS", "REGION_HUES", "answer_from_pixels", "bar_question",
    "parse_question", "region_colour_name", "region_question",
]
