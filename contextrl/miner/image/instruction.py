"""Edit instructions and results: the typed records an `ImageEditor` takes and returns.

An instruction is built directly or parsed from a short English sentence ("recolour the
shape to blue", "set bar 3 to 5"); `to_text()` writes the sentence back (it is also the
prompt a diffusion editor gets). Invalid instructions raise ConfigError naming the field.
`reshape` is an op beyond the issue's list: it redraws the shape as another kind, which is
what changes the answer of "what shape ...?" questions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from PIL import Image

from contextrl.errors import ConfigError
from contextrl.miner.image.oracle import REGION_HUES
from contextrl.miner.image.shapes import PALETTE, SHAPES, Region

EditOp = Literal["recolour", "remove", "move", "duplicate", "reshape", "set_digit", "set_bar"]
OPS: tuple[str, ...] = ("recolour", "remove", "move", "duplicate", "reshape", "set_digit", "set_bar")
COLOURS: tuple[str, ...] = tuple(dict.fromkeys([*PALETTE, *REGION_HUES]))
"""Colour names an instruction may use: easy-VQA's palette (shapes) and `REGION_HUES` (regions)."""


@dataclass(frozen=True)
class EditInstruction:
    """What to edit. `region=None` means "the shape" (segmented foreground of a single-shape
    image); otherwise the edit works on that rectangle. Build one directly or `parse` text."""

    op: EditOp
    region: Region | None = None
    """(x0, y0, x1, y1), end-exclusive; None: the image's one shape."""
    colour: str | None = None
    """recolour: the new colour name (one of COLOURS)."""
    hue_shift: float | None = None
    """recolour: rotate hue by this many degrees instead of setting a colour."""
    offset: tuple[int, int] | None = None
    """move / duplicate: (dx, dy) in pixels; None lets the editor draw one from its seed."""
    shape: str | None = None
    """reshape: the new shape kind (circle / rectangle / triangle)."""
    digit: int | None = None
    """set_digit: the new digit 0..9."""
    bar: int | None = None
    """set_bar: which bar, 1-based from the left."""
    value: int | None = None
    """set_bar: the bar's new value."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"EditInstruction.{name}={getattr(self, name)!r}: {fix}")

        if self.op not in OPS:
            raise bad("op", f"use one of {list(OPS)}")
        if self.region is not None:
            r = tuple(self.region)
            if len(r) != 4 or not all(isinstance(v, int) and v >= 0 for v in r) or not (r[0] < r[2] and r[1] < r[3]):
                raise bad("region", "use (x0, y0, x1, y1): non-negative integers with x0 < x1 and y0 < y1")
            object.__setattr__(self, "region", r)
        if self.colour is not None and self.colour not in COLOURS:
            raise bad("colour", f"use one of {list(COLOURS)}")
        if self.op == "recolour" and (self.colour is None) == (self.hue_shift is None):
            raise bad("colour", "a recolour needs exactly one of colour (a name) or hue_shift (degrees)")
        if self.offset is not None:
            o = tuple(self.offset)
            if len(o) != 2 or not all(isinstance(v, int) for v in o) or o == (0, 0):
                raise bad("offset", "use (dx, dy): two integers, not both zero")
            object.__setattr__(self, "offset", o)
        if self.op == "reshape" and (self.shape not in SHAPES or self.region is not None):
            raise bad("shape", f"a reshape needs shape in {list(SHAPES)} and no region (it redraws the image's one shape)")
        if self.op == "set_digit" and not (isinstance(self.digit, int) and 0 <= self.digit <= 9):
            raise bad("digit", "set_digit needs digit: an integer 0..9")
        if self.op == "set_bar":
            if not (isinstance(self.bar, int) and self.bar >= 1):
                raise bad("bar", "set_bar needs bar: an integer >= 1 (bars count from 1, left to right)")
            if not (isinstance(self.value, int) and self.value >= 0):
                raise bad("value", "set_bar needs value: an integer >= 0")

    def to_text(self) -> str:
        """A short English instruction (what a diffusion editor is prompted with); `parse` reads it back."""
        target = "the shape" if self.region is None else "region ({}, {}, {}, {})".format(*self.region)
        off = "" if self.offset is None else " by ({}, {})".format(*self.offset)
        if self.op == "recolour":
            return f"recolour {target} to {self.colour}" if self.colour else f"shift the hue of {target} by {self.hue_shift:g} degrees"
        if self.op in ("remove", "move", "duplicate"):
            return f"{self.op} {target}{off if self.op != 'remove' else ''}"
        if self.op == "reshape":
            return f"turn the shape into a {self.shape}"
        if self.op == "set_digit":
            return f"set the digit to {self.digit}"
        return f"set bar {self.bar} to {self.value}"

    @classmethod
    def parse(cls, text: str) -> "EditInstruction":
        """Read a short instruction: "recolour the shape to blue", "remove region (0, 0, 8, 8)",
        "move the shape by (10, -4)", "duplicate the shape", "turn the shape into a circle",
        "shift the hue of region (...) by 90 degrees", "set the digit to 7", "set bar 3 to 5"."""
        t = " ".join(text.strip().lower().rstrip(".").split())
        m = re.search(r"region \((\d+), ?(\d+), ?(\d+), ?(\d+)\)", t)
        region = tuple(int(v) for v in m.groups()) if m else None
        m = re.search(r"\bby \((-?\d+), ?(-?\d+)\)", t)
        offset = tuple(int(v) for v in m.groups()) if m else None
        if m := re.fullmatch(r"set bar (\d+) to (\d+)", t):
            return cls("set_bar", bar=int(m.group(1)), value=int(m.group(2)))
        if m := re.fullmatch(r"(?:set|change) the digit to (\d)", t):
            return cls("set_digit", digit=int(m.group(1)))
        if m := re.search(r"\bby (-?\d+(?:\.\d+)?) degrees?$", t):
            if t.startswith(("shift the hue", "rotate the hue")):
                return cls("recolour", region=region, hue_shift=float(m.group(1)))
        if t.startswith(("recolour", "recolor", "colour", "color", "make", "change the colo", "paint")):
            m = re.search(rf"\b({'|'.join(COLOURS)})$", t)
            if m:
                return cls("recolour", region=region, colour=m.group(1))
        if t.startswith(("turn", "reshape", "replace", "change the shape")):
            m = re.search(rf"\b({'|'.join(SHAPES)})$", t)
            if m:
                return cls("reshape", shape=m.group(1))
        for op in ("remove", "move", "duplicate"):
            if t.startswith(op) or (op == "remove" and t.startswith(("erase", "delete"))):
                return cls(op, region=region, offset=offset if op != "remove" else None)
        raise ConfigError(f"EditInstruction.parse: cannot read {text!r}; say e.g. 'recolour the shape to blue', "
                          f"'remove region (x0, y0, x1, y1)', 'move the shape by (dx, dy)', 'set bar 2 to 7'")


@dataclass(frozen=True, eq=False)
class EditResult:
    """An edited image, the region the edit changed (x0, y0, x1, y1; end-exclusive) and the instruction."""

    image: Image.Image
    region: Region
    """Bounding box of everything the edit changed."""
    instruction: EditInstruction
    details: Mapping[str, Any] = field(default_factory=dict)
    """What the editor found and did (old colour/shape/value, the offset it drew): JSON-serialisable."""
    parts: tuple[Region, ...] = ()
    """The changed areas as separate boxes when that is tighter than `region` (a move: where
    the shape was and where it went); empty means `(region,)`. Use `boxes`."""

    @property
    def boxes(self) -> tuple[Region, ...]:
        """`parts`, or `(region,)` when the edit is one box."""
        return self.parts or (self.region,)


__all__ = ["COLOURS", "EditInstruction", "EditOp", "EditResult", "OPS"]
