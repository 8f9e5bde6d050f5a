"""Artifact and global-change filter for edited images: an edit must stay inside its region.

`check_edit(original, edited, region)` compares the two images outside the declared edited
region and returns an `EditVerdict` (a `Verdict` with the measurements attached). Checks,
recorded by name:

- `same_format`: same size and mode (a pair whose images differ in size is a shortcut);
- `region_size`: the region covers at most `max_region_fraction` of the image: an edit over
  most of the picture is a restyle, not a local change;
- `changed_inside`: something changed inside the region (rejects no-op edits): at least
  `min_changed_pixels` pixels differ by more than `pixel_tolerance`;
- `outside_unchanged`: outside the region grown by `margin`, the mean absolute difference
  is at most `max_outside_mean_abs_diff` and at most `max_outside_changed_fraction` of the
  pixels changed; the detail names the bounding box of the changed pixels, so a global
  change reads as a box much larger than the region;
- `ssim_outside`: the mean of scikit-image's SSIM map (`structural_similarity(full=True)`)
  over the pixels outside the grown region is at least `min_ssim_outside`.

Why both SSIM and raw differences: SSIM is forgiving of small uniform brightness shifts
(+10 over scikit-image's `chelsea` still scores 0.993), a typical global change of a
diffusion editor; the difference checks catch that, SSIM catches structural
artifacts (blur, noise, texture changes) that move the mean little. The margin defaults to
more than SSIM's 7-pixel window radius, so the window's overlap with the edit itself does
not count as damage outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from contextrl.errors import ConfigError
from contextrl.configs import FromDict
from contextrl.miner.image.shapes import changed_mask, mask_bbox
from contextrl.miner.pair import Check, Verdict

Region = tuple[int, int, int, int]


@dataclass(frozen=True)
class EditFilterConfig(FromDict):
    """Thresholds for `check_edit` (validated at construction; ConfigError names the field).

    The defaults suit editors that leave unedited pixels exactly as they were (the
    procedural editor). A diffusion editor re-encodes the whole image, shifting every pixel a
    few levels: for it, raise `max_outside_mean_abs_diff` (e.g. 4) and `pixel_tolerance`
    (e.g. 24) and let `min_ssim_outside` do the judging."""

    min_ssim_outside: float = 0.98
    """Mean SSIM outside the grown region must be at least this (0..1). 0.98 admits resampling
    noise of a lossless re-save and rejects visible blur, noise or restyling."""
    margin: int = 4
    """Pixels around the region that are not compared (edge blending, SSIM window overlap); >= 0."""
    pixel_tolerance: int = 8
    """A pixel counts as changed when one channel differs by more than this (0..255)."""
    max_outside_mean_abs_diff: float = 1.0
    """Mean absolute difference allowed outside the grown region (0..255 scale, all channels)."""
    max_outside_changed_fraction: float = 0.002
    """Fraction of outside pixels allowed to change by more than `pixel_tolerance` (0..1)."""
    min_changed_pixels: int = 4
    """At least this many pixels inside the region must change (else the edit is a no-op); >= 1."""
    max_region_fraction: float = 0.5
    """The region may cover at most this fraction of the image (0..1]."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"EditFilterConfig.{name}={getattr(self, name)!r}: {fix}")

        for name, lo, hi in (("min_ssim_outside", -1.0, 1.0), ("max_outside_changed_fraction", 0.0, 1.0),
                             ("max_region_fraction", 0.0, 1.0), ("max_outside_mean_abs_diff", 0.0, 255.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
                raise bad(name, f"use a number in [{lo}, {hi}]")
        for name, lo in (("margin", 0), ("pixel_tolerance", 0), ("min_changed_pixels", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise bad(name, f"use an integer >= {lo}")
        if self.max_region_fraction == 0:
            raise bad("max_region_fraction", "use a fraction > 0 (0.5 allows edits over half the image)")



@dataclass(frozen=True)
class EditVerdict(Verdict):
    """A `Verdict` plus what was measured (NaN where a measurement was not possible)."""

    ssim_outside: float = float("nan")
    outside_mean_abs_diff: float = float("nan")
    outside_changed_fraction: float = float("nan")
    changed_inside: int = 0
    changed_bbox: Region = (0, 0, 0, 0)
    """Bounding box of every pixel that changed by more than `pixel_tolerance`, anywhere."""

    @classmethod
    def of(cls, checks: Any, **measured: Any) -> "EditVerdict":
        """A verdict that is ok when every check passed, with the measurements."""
        checks = tuple(Check(*c) for c in checks)
        return cls(ok=all(c.passed for c in checks), reasons=checks, **measured)

    def measurements(self) -> dict[str, Any]:
        """The numbers, JSON-serialisable (for pair provenance)."""
        return {"ssim_outside": round(self.ssim_outside, 5), "outside_mean_abs_diff": round(self.outside_mean_abs_diff, 4),
                "outside_changed_fraction": round(self.outside_changed_fraction, 6), "changed_inside": self.changed_inside,
                "changed_bbox": list(self.changed_bbox)}


def _ssim_outside(a: np.ndarray, b: np.ndarray, outside: np.ndarray, win: int) -> float:
    """Mean of the SSIM map over `outside`. Computed on the crop around the differing pixels,
    grown by twice the window: every pixel further out sees identical windows in both images
    (SSIM exactly 1), and inside the crop each window the full computation would see is
    unchanged, so the result equals the full-image map's mean at a fraction of the cost."""
    from skimage.metrics import structural_similarity

    x0, y0, x1, y1 = mask_bbox(changed_mask(a, b))
    if x1 == x0:
        return 1.0
    g = win + 1
    h, w = a.shape[:2]
    X0, Y0, X1, Y1 = max(0, x0 - g), max(0, y0 - g), min(w, x1 + g), min(h, y1 + g)
    ca, cb = a[Y0:Y1, X0:X1], b[Y0:Y1, X0:X1]
    win = min(win, *(d if d % 2 else d - 1 for d in ca.shape[:2]))
    _, smap = structural_similarity(ca, cb, channel_axis=2, data_range=255.0, full=True, win_size=win)
    crop_out = outside[Y0:Y1, X0:X1]
    n_out = int(outside.sum())
    return float((smap.mean(axis=2)[crop_out].sum() + (n_out - int(crop_out.sum()))) / n_out)


def check_edit(original: Image.Image, edited: Image.Image, region: Region | tuple[Region, ...],
               config: EditFilterConfig = EditFilterConfig()) -> EditVerdict:
    """Is `edited` a local edit of `original` inside `region` (one box or several)? See the module docstring."""
    regions = [tuple(region)] if region and isinstance(region[0], int) else [tuple(r) for r in region]
    if original.size != edited.size or original.mode != edited.mode:
        return EditVerdict.of(
            [Check("same_format", False, f"size/mode differ: {original.size} {original.mode} vs {edited.size} {edited.mode}")])
    checks = [Check("same_format", True, f"both {original.size[0]}x{original.size[1]} {original.mode}")]
    a = np.asarray(original.convert("RGB"), dtype=np.float32)
    b = np.asarray(edited.convert("RGB"), dtype=np.float32)
    h, w = a.shape[:2]
    inside, grown = np.zeros((h, w), dtype=bool), np.zeros((h, w), dtype=bool)
    m = config.margin
    for x0, y0, x1, y1 in regions:
        inside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        grown[max(0, y0 - m):max(0, y1 + m), max(0, x0 - m):max(0, x1 + m)] = True
    frac = inside.sum() / float(h * w)
    checks.append(Check("region_size", bool(0 < frac <= config.max_region_fraction),
                        f"region covers {100 * frac:.1f}% of the image (max {100 * config.max_region_fraction:.0f}%)"))
    absdiff = np.abs(a - b)
    changed = absdiff.max(axis=2) > config.pixel_tolerance
    n_in = int((changed & inside).sum())
    checks.append(Check("changed_inside", n_in >= config.min_changed_pixels,
                        f"{n_in} pixel(s) changed inside the region (need >= {config.min_changed_pixels}; tolerance {config.pixel_tolerance})"))
    outside = ~grown
    bbox = mask_bbox(changed)
    if not outside.any():
        checks.append(Check("outside_unchanged", False, "nothing is left outside the region and its margin to compare"))
        return EditVerdict.of(checks, changed_inside=n_in, changed_bbox=bbox)
    mad = float(absdiff[outside].mean())
    cfrac = float(changed[outside].mean())
    ok = bool(mad <= config.max_outside_mean_abs_diff and cfrac <= config.max_outside_changed_fraction)
    checks.append(Check("outside_unchanged", ok,
                        f"outside the region: mean |diff| {mad:.3f} (max {config.max_outside_mean_abs_diff}), "
                        f"{100 * cfrac:.3f}% pixels changed (max {100 * config.max_outside_changed_fraction:.3f}%); "
                        f"changed pixels span {bbox} vs declared {regions if len(regions) > 1 else regions[0]}"))
    win = min(7, h if h % 2 else h - 1, w if w % 2 else w - 1)
    if win < 3:
        ssim_out = float("nan")
        checks.append(Check("ssim_outside", ok, f"image too small for SSIM ({w}x{h}); relying on outside_unchanged"))
    else:
        ssim_out = _ssim_outside(a, b, outside, win)
        checks.append(Check("ssim_outside", bool(ssim_out >= config.min_ssim_outside),
                            f"SSIM outside the region {ssim_out:.4f} (min {config.min_ssim_outside})"))
    return EditVerdict.of(checks, ssim_outside=ssim_out, outside_mean_abs_diff=mad,
                                        outside_changed_fraction=cfrac, changed_inside=n_in, changed_bbox=bbox)


__all__ = ["EditFilterConfig", "EditVerdict", "check_edit"]
