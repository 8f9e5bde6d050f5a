"""Item sources for the edit miner: (image, question, answer) records it can edit.

- `easy_vqa_sample`: a seeded sample of easy-VQA questions (`data.easy_vqa_items` streams
  them all in order);
- `skimage_region_items`: "what colour is the region (x0, y0, x1, y1)?" over scikit-image's
  bundled sample photos, answered from the pixels by the oracle; these are not a VQA data
  set, they exist so edits on real photographs are mined and benchmarked with a question
  whose answer a recolour provably changes;
- `chart_items`: bar charts and seven-segment digits drawn by `charts`.

Items are `contextrl.miner.image.data.VQAItem`s; the miner only reads the four fields
(`VQALike`), so any record with them works.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Iterable, Literal, Protocol

import numpy as np
from PIL import Image

from contextrl.miner.image.data import VQAItem
from contextrl.miner.image.charts import BarChartLayout, render_bar_chart, render_digit
from contextrl.miner.image.oracle import DIGIT_QUESTION, bar_question, region_colour_name, region_question
from contextrl.miner.image.shapes import as_rgb


class VQALike(Protocol):
    """What the miner reads from an item (`contextrl.miner.image.data.VQAItem` has these)."""

    image_id: Any
    image_path: str
    question: str
    answer: str


def make_item(image_id: Any, image_path: str, question: str, answer: str) -> VQAItem:
    """A `VQAItem` with a string id and path."""
    return VQAItem(image_id=str(image_id), image_path=str(image_path), question=question, answer=answer)


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG bytes; zlib level 1 (about 3x faster than the default on photos, ~10% larger)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def save_png(image: Image.Image, image_dir: Path) -> Path:
    """Save as PNG under a content-hashed name (same pixels -> same file); returns the path."""
    data = png_bytes(image)
    path = image_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.png"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


SKIMAGE_SAMPLES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel", "camera", "coins")
"""scikit-image samples that ship with the package (no download); grayscale ones are used as RGB."""


def easy_vqa_sample(limit: int | None = None, seed: int = 0, split: Literal["train", "test"] = "train") -> list[VQAItem]:
    """easy-VQA questions as items: all of them in order, or `limit` drawn with `seed` (without replacement)."""
    import easy_vqa

    qs, answers, ids = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    order = range(len(qs)) if limit is None else np.random.default_rng(seed).permutation(len(qs))[:limit]
    return [make_item(f"easy-vqa/{split}/{ids[i]}", paths[ids[i]], qs[i], answers[i]) for i in order]


def skimage_region_items(out_dir: str | Path, n: int, seed: int = 0, samples: Iterable[str] = SKIMAGE_SAMPLES) -> list[VQALike]:
    """`n` "what colour is the region (x0, y0, x1, y1)?" items over scikit-image samples: each
    sample saved once as an RGB PNG under `out_dir/sources/`, regions 1/8 to 1/4 of the
    shorter side drawn with `seed`, answers read by the oracle from the pixels."""
    import skimage.data

    src = Path(out_dir) / "sources"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    loaded = []
    for name in samples:
        arr = getattr(skimage.data, name)()
        im = Image.fromarray(arr.astype(np.uint8) if arr.dtype != bool else (arr * 255).astype(np.uint8)).convert("RGB")
        path = src / f"skimage-{name}.png"
        im.save(path)
        loaded.append((name, path, as_rgb(im)))
    items = []
    for i in range(n):
        name, path, arr = loaded[i % len(loaded)]
        h, w = arr.shape[:2]
        side = int(rng.integers(min(h, w) // 8, min(h, w) // 4 + 1))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        region = (x0, y0, x0 + side, y0 + side)
        answer = region_colour_name(arr[y0:y0 + side, x0:x0 + side])
        items.append(make_item(f"skimage/{name}/{i}", str(path), region_question(region), answer))
    return items


def chart_items(out_dir: str | Path, n: int, seed: int = 0) -> list[VQALike]:
    """`n` chart items, alternating bar charts ("what is the value of bar k (from the left)?")
    and seven-segment digits ("what digit is shown?"), drawn with `seed` under `out_dir/sources/`."""
    src = Path(out_dir) / "sources"
    src.mkdir(parents=True, exist_ok=True)
    rng, layout, items = np.random.default_rng(seed), BarChartLayout(), []
    for i in range(n):
        if i % 2 == 0:
            values = [int(v) for v in rng.integers(1, layout.max_value + 1, size=layout.n_bars)]
            k = int(rng.integers(1, layout.n_bars + 1))
            path = save_png(render_bar_chart(values, layout), src)
            items.append(make_item(f"chart/bar/{i}", str(path), bar_question(k), str(values[k - 1])))
        else:
            d = int(rng.integers(0, 10))
            path = save_png(render_digit(d), src)
            items.append(make_item(f"chart/digit/{i}", str(path), DIGIT_QUESTION, str(d)))
    return items


__all__ = [
    "SKIMAGE_SAMPLES", "VQALike", "chart_items", "easy_vqa_sample", "make_item", "png_bytes", "save_png", "skimage_region_items",
]
