"""Image editing for contrastive pairs: `(image, instruction) -> edited image + edited region`.

`ImageEditor` is the plug-in interface. Two editors ship:

- `ProceduralEditor`: deterministic, CPU only, no model. On single-shape images (easy-VQA)
  it segments the shape as a blend over the flat background and recolours, removes, moves,
  duplicates or redraws it (`reshape`); on general images (scikit-image samples, photos) it
  works on an explicit rectangle (recolour by hue, remove by inpainting, move/duplicate the
  patch); on charts drawn by `charts` it changes exactly one bar or digit. Every pixel
  outside the returned region keeps its exact bytes, which is what the tests assert.
- `DiffusersEditor`: an adapter for diffusers instruction-editing pipelines
  (InstructPix2Pix-style) for GPU users. A diffusion edit round-trips the whole image
  through a VAE, so unlike the procedural editor it changes pixels everywhere a little;
  its region is therefore *measured* from the pixel difference (`changed_region`), and the
  SSIM filter (`contextrl.miner.image.ssim`) decides whether the edit was local enough.

Deliberate differences from the issue's sketch: the op set adds `reshape` (redraw the shape
as another kind), needed to change the answer of "what shape ...?" questions; and region
recolouring sets the hue (and lifts saturation to at least 0.6) instead of only shifting it,
so the region's colour name is known after the edit (`hue_shift` is still available).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from contextrl.errors import ConfigError, MiningError
from contextrl.miner.image import charts
from contextrl.miner.image.instruction import COLOURS, OPS, EditInstruction, EditOp, EditResult
from contextrl.miner.image.oracle import REGION_HUES
from contextrl.miner.image.shapes import PALETTE, Region, as_rgb, changed_mask, composite, mask_bbox, segment_shape, shape_alpha, shift_array


@runtime_checkable
class ImageEditor(Protocol):
    """The editor plug-in: a name (recorded in pair provenance) and `edit`."""

    name: str

    def edit(self, image: Image.Image, instruction: EditInstruction) -> EditResult:
        """Apply `instruction`; raise MiningError when it does not apply to this image."""
        ...


def union(a: Region, b: Region) -> Region:
    """Smallest region holding both (an empty (0, 0, 0, 0) region is ignored)."""
    if a[2] <= a[0] or a[3] <= a[1]:
        return b
    if b[2] <= b[0] or b[3] <= b[1]:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def changed_region(before: Image.Image, after: Image.Image, threshold: int = 0, open_px: int = 0) -> Region:
    """Bounding box of the pixels whose largest channel difference exceeds `threshold`, after
    removing specks thinner than 2*`open_px`+1 pixels (binary opening); (0, 0, 0, 0) if none."""
    a, b = as_rgb(before), as_rgb(after)
    if a.shape != b.shape:
        raise MiningError(f"changed_region: image sizes differ ({a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]})")
    mask = changed_mask(a, b, threshold)
    if open_px > 0 and mask.any():
        from scipy.ndimage import binary_opening

        mask = binary_opening(mask, structure=np.ones((2 * open_px + 1, 2 * open_px + 1), dtype=bool))
    return mask_bbox(mask)


class ProceduralEditor:
    """Deterministic CPU editor (see the module docstring). Randomness (an offset not given
    in the instruction) comes from `seed`, the image bytes and the instruction, so the same
    call gives the same bytes in any order and any process."""

    name = "procedural"

    def __init__(self, seed: int = 0, inpaint: Literal["mean", "biharmonic"] = "mean", tolerance: int = 3,
                 bar_layout: charts.BarChartLayout = charts.BarChartLayout(), digit_layout: charts.DigitLayout = charts.DigitLayout()):
        if inpaint not in ("mean", "biharmonic"):
            raise ConfigError(f"ProceduralEditor.inpaint={inpaint!r}: use 'mean' (fast, flat fill) or 'biharmonic' (skimage inpainting)")
        self.seed, self.inpaint, self.tolerance = seed, inpaint, tolerance
        self.bar_layout, self.digit_layout = bar_layout, digit_layout

    def edit(self, image: Image.Image, instruction: EditInstruction) -> EditResult:
        if instruction.op in ("set_bar", "set_digit"):
            return self._chart(image, instruction)
        arr = as_rgb(image)
        if instruction.region is None:
            out, region, details = self._shape(arr, instruction, self._rng(arr, instruction))
        else:
            out, region, details = self._region(arr, instruction, self._rng(arr, instruction))
        parts = tuple(tuple(p) for p in details.pop("parts", ()))
        if image.mode == "L":
            if instruction.op == "recolour":
                raise MiningError("recolour: the image is grayscale (mode L); convert it with image.convert('RGB') first")
            return EditResult(Image.fromarray(out[..., 0], "L"), region, instruction, details, parts)
        return EditResult(Image.fromarray(out, "RGB"), region, instruction, details, parts)

    def _rng(self, arr: np.ndarray, instruction: EditInstruction) -> np.random.Generator:
        h = hashlib.sha256(arr.tobytes() + repr(instruction).encode()).digest()
        return np.random.default_rng([self.seed, int.from_bytes(h[:8], "little")])

    # ------------------------------------------------------------------ single-shape images

    def _shape(self, arr: np.ndarray, ins: EditInstruction, rng: np.random.Generator) -> tuple[np.ndarray, Region, dict]:
        shape = segment_shape(Image.fromarray(arr), self.tolerance)
        if shape is None:
            raise MiningError(f"{ins.op}: the image has no shape to edit (only background)")
        bg, mask, bbox = shape.background, shape.mask, shape.bbox
        details: dict[str, Any] = {"from_colour": shape.colour, "from_shape": shape.kind, "shape_bbox": list(bbox)}
        if ins.op == "recolour":
            target = PALETTE.get(ins.colour) if ins.colour else _rotate_hue(shape.colour_rgb, ins.hue_shift)
            if target is None:
                raise MiningError(f"recolour: {ins.colour!r} is not a shape colour; use one of {list(PALETTE)}")
            return composite(arr, bg, target, shape.alpha, mask), bbox, details
        out = arr.copy()
        out[mask] = bg
        if ins.op == "remove":
            return out, bbox, details
        if ins.op == "reshape":
            x0, y0, x1, y1 = bbox
            alpha = shape_alpha(ins.shape, ((x0 + x1) / 2.0, (y0 + y1) / 2.0), max(x1 - x0, y1 - y0), (arr.shape[1], arr.shape[0]))
            new = alpha > 1.0 / 255
            return composite(out, bg, shape.colour_rgb, alpha, new), union(bbox, mask_bbox(new)), details
        dx, dy = ins.offset or _draw_offset(bbox, arr.shape, rng, disjoint=True)
        details["offset"] = [dx, dy]
        moved = shift_array(mask, dx, dy)
        if moved.sum() != mask.sum():
            raise MiningError(f"{ins.op}: offset ({dx}, {dy}) moves part of the shape off the {arr.shape[1]}x{arr.shape[0]} canvas")
        if ins.op == "duplicate":
            if (moved & _dilate(mask)).any():
                raise MiningError(f"duplicate: offset ({dx}, {dy}) makes the copy touch the original; use a larger offset")
            out = arr.copy()
        out[moved] = shift_array(arr, dx, dy)[moved]
        if ins.op == "duplicate":
            return out, mask_bbox(moved), details
        details["parts"] = [bbox, mask_bbox(moved)]
        return out, union(bbox, mask_bbox(moved)), details

    # ------------------------------------------------------------------ general images: a rectangle

    def _region(self, arr: np.ndarray, ins: EditInstruction, rng: np.random.Generator) -> tuple[np.ndarray, Region, dict]:
        x0, y0, x1, y1 = ins.region
        h, w = arr.shape[:2]
        if x1 > w or y1 > h:
            raise MiningError(f"{ins.op}: region {ins.region} is outside the {w}x{h} image")
        out, details = arr.copy(), {}
        if ins.op == "recolour":
            out[y0:y1, x0:x1] = _recolour_patch(arr[y0:y1, x0:x1], ins.colour, ins.hue_shift)
            return out, ins.region, details
        if ins.op in ("remove", "move"):
            out[y0:y1, x0:x1] = self._fill(arr, ins.region)
            if ins.op == "remove":
                return out, ins.region, details
        dx, dy = ins.offset or _draw_offset(ins.region, arr.shape, rng, disjoint=True)
        details["offset"] = [dx, dy]
        dst = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        if dst[0] < 0 or dst[1] < 0 or dst[2] > w or dst[3] > h:
            raise MiningError(f"{ins.op}: offset ({dx}, {dy}) moves region {ins.region} outside the {w}x{h} image")
        out[dst[1]:dst[3], dst[0]:dst[2]] = arr[y0:y1, x0:x1]
        if ins.op == "duplicate":
            return out, dst, details
        details["parts"] = [ins.region, dst]
        return out, union(ins.region, dst), details

    def _fill(self, arr: np.ndarray, region: Region) -> np.ndarray:
        """What replaces a removed rectangle: the mean of a 4-pixel ring around it, or biharmonic inpainting."""
        x0, y0, x1, y1 = region
        h, w = arr.shape[:2]
        pad = 4 if self.inpaint == "mean" else max(8, (x1 - x0) // 2, (y1 - y0) // 2)
        X0, Y0, X1, Y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
        crop = arr[Y0:Y1, X0:X1].astype(np.float64)
        hole = np.zeros(crop.shape[:2], dtype=bool)
        hole[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] = True
        if hole.all():
            raise MiningError(f"remove: region {region} covers the whole image; nothing is left to fill it from")
        if self.inpaint == "mean":
            fill = np.broadcast_to(crop[~hole].mean(axis=0), (y1 - y0, x1 - x0, 3))
        else:
            from skimage.restoration import inpaint_biharmonic

            fill = inpaint_biharmonic(crop / 255.0, hole, channel_axis=-1)[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] * 255.0
        return np.clip(np.rint(fill), 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ charts

    def _chart(self, image: Image.Image, ins: EditInstruction) -> EditResult:
        if ins.op == "set_bar":
            values = charts.read_bar_chart(image, self.bar_layout)
            if values is None:
                raise MiningError("set_bar: the image is not a bar chart drawn by charts.render_bar_chart with this layout")
            if not (ins.bar <= len(values) and ins.value <= self.bar_layout.max_value):
                raise MiningError(f"set_bar: bar {ins.bar} / value {ins.value} is outside this chart "
                                  f"(bars 1..{len(values)}, values 0..{self.bar_layout.max_value})")
            old, new = values[ins.bar - 1], list(values)
            new[ins.bar - 1] = ins.value
            region = charts.bar_region(self.bar_layout, ins.bar, old, ins.value)
            return EditResult(_like(charts.render_bar_chart(new, self.bar_layout), image), region, ins, {"from_value": old})
        old_digit = charts.read_digit(image, self.digit_layout)
        if old_digit is None:
            raise MiningError("set_digit: the image is not a digit drawn by charts.render_digit with this layout")
        region = charts.digit_region(self.digit_layout, old_digit, ins.digit) if old_digit != ins.digit else (0, 0, 0, 0)
        return EditResult(_like(charts.render_digit(ins.digit, self.digit_layout), image), region, ins, {"from_digit": old_digit})


def _like(im: Image.Image, ref: Image.Image) -> Image.Image:
    return im if ref.mode == "RGB" else im.convert(ref.mode)


def _dilate(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=1)


def _draw_offset(box: Region, shape: tuple[int, ...], rng: np.random.Generator, disjoint: bool) -> tuple[int, int]:
    """A (dx, dy) keeping `box` on the canvas; with `disjoint`, the moved box does not touch the
    original (one pixel apart). MiningError when no such offset exists."""
    x0, y0, x1, y1 = box
    h, w = shape[:2]
    for _ in range(2000):
        dx, dy = int(rng.integers(-x0, w - x1 + 1)), int(rng.integers(-y0, h - y1 + 1))
        if (dx, dy) != (0, 0) and (not disjoint or abs(dx) > x1 - x0 or abs(dy) > y1 - y0):
            return dx, dy
    raise MiningError(f"no offset keeps region {box} on the {w}x{h} canvas without overlapping itself")


def _rotate_hue(rgb: tuple[int, int, int], degrees: float) -> tuple[int, int, int]:
    out = _recolour_patch(np.asarray(rgb, dtype=np.uint8).reshape(1, 1, 3), None, degrees)
    return tuple(int(v) for v in out[0, 0])


def _recolour_patch(patch: np.ndarray, colour: str | None, hue_shift: float | None) -> np.ndarray:
    """Set the hue of every pixel to `colour`'s (lifting saturation to >= 0.6; 'gray' removes
    it, 'black' darkens) or rotate it by `hue_shift` degrees; value is kept."""
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(patch)
    if hue_shift is not None:
        hsv[..., 0] = (hsv[..., 0] + hue_shift / 360.0) % 1.0
    elif colour in REGION_HUES:
        hsv[..., 0] = REGION_HUES[colour] / 360.0
        hsv[..., 1] = np.maximum(hsv[..., 1], 0.6)
    elif colour == "gray":
        hsv[..., 1] = 0.0
    elif colour == "black":
        hsv[..., 2] = hsv[..., 2] * 0.15
    else:
        raise MiningError(f"recolour: {colour!r} cannot recolour a region; use one of {[*REGION_HUES, 'gray', 'black']}")
    return np.clip(np.rint(hsv2rgb(hsv) * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- diffusers adapter


def require_diffusers() -> Any:
    """Import diffusers or raise MiningError saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise MiningError("DiffusersEditor.from_pretrained needs the diffusers package: pip install diffusers transformers "
                          "accelerate (a CUDA GPU is strongly recommended); or pass any pipeline object to DiffusersEditor(...), "
                          "or use ProceduralEditor on CPU") from None
    return diffusers


class DiffusersEditor:
    """Adapter for diffusers instruction-editing pipelines (InstructPix2Pix-style), for GPU users.

        pip install diffusers transformers accelerate
        editor = DiffusersEditor.from_pretrained("timbrooks/instruct-pix2pix", device="cuda")
        result = editor.edit(image, EditInstruction.parse("recolour the shape to blue"))

    `pipeline` is any callable taking `prompt=..., image=...` (and, when it accepts them,
    `num_inference_steps`, `guidance_scale`, `image_guidance_scale`, `generator`) and
    returning an object with `.images` (or a tuple whose first item is the image list). The
    prompt is `instruction.to_text()`. The output is resized to the input's size and mode,
    and the region is measured: pixels whose largest channel change exceeds
    `diff_threshold`, specks thinner than 2*`open_px`+1 pixels removed. Diffusion edits
    change every pixel slightly (the VAE round trip), so run the SSIM filter on the result.
    """

    name = "diffusers"

    def __init__(self, pipeline: Any, *, num_inference_steps: int = 20, guidance_scale: float = 7.5,
                 image_guidance_scale: float = 1.5, seed: int = 0, diff_threshold: int = 24, open_px: int = 1):
        if not callable(pipeline):
            raise ConfigError(f"DiffusersEditor.pipeline: {type(pipeline).__name__} is not callable; pass a diffusers pipeline "
                              f"or build one with DiffusersEditor.from_pretrained(model_id)")
        self.pipeline, self.seed, self.diff_threshold, self.open_px = pipeline, seed, diff_threshold, open_px
        self.call_kwargs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                            "image_guidance_scale": image_guidance_scale}

    @classmethod
    def from_pretrained(cls, model_id: str = "timbrooks/instruct-pix2pix", *, device: str = "cuda", dtype: str = "float16",
                        **kwargs: Any) -> "DiffusersEditor":
        """Load `StableDiffusionInstructPix2PixPipeline` (needs diffusers and, in practice, a GPU)."""
        diffusers = require_diffusers()
        import torch

        pipe = diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained(model_id, torch_dtype=getattr(torch, dtype), safety_checker=None)
        return cls(pipe.to(device), **kwargs)

    def _kwargs(self, prompt: str, image: Image.Image) -> dict[str, Any]:
        kw: dict[str, Any] = {"prompt": prompt, "image": image, **self.call_kwargs}
        try:
            params = inspect.signature(self.pipeline).parameters
        except (TypeError, ValueError):
            return kw
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kw = {k: v for k, v in kw.items() if k in params}
        if "generator" in params:
            try:
                import torch

                kw["generator"] = torch.Generator(device=str(getattr(self.pipeline, "device", "cpu"))).manual_seed(self.seed)
            except Exception:  # no torch, or a device torch cannot make a generator for
                pass
        return kw

    def edit(self, image: Image.Image, instruction: EditInstruction) -> EditResult:
        out = self.pipeline(**self._kwargs(instruction.to_text(), image.convert("RGB")))
        images = getattr(out, "images", None)
        if images is None and isinstance(out, (tuple, list)) and out:
            images = out[0]
        if not images:
            raise MiningError(f"DiffusersEditor: the pipeline returned {type(out).__name__} without images")
        edited = images[0] if isinstance(images[0], Image.Image) else Image.fromarray(np.asarray(images[0]))
        if edited.size != image.size:
            edited = edited.resize(image.size, Image.LANCZOS)
        edited = edited.convert(image.mode if image.mode in ("RGB", "L") else "RGB")
        region = changed_region(image, edited, self.diff_threshold, self.open_px)
        return EditResult(edited, region, instruction, {"prompt": instruction.to_text()})


__all__ = [
    "COLOURS", "DiffusersEditor", "EditInstruction", "EditOp", "EditResult", "ImageEditor", "OPS", "ProceduralEditor",
    "changed_region", "require_diffusers", "union",
]
