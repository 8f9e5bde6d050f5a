"""Streaming VQA sources: `VQAItem(image_id, image_path, question, answer)` one at a time.

Sources yield records that point at image *files*; nothing here opens an image, so a miner
can read a source of any size and load pixels batch by batch.

- `easy_vqa_items(split, limit)`: the `easy-vqa` package (4,000 train + 1,000 test 64x64 PNGs
  of one coloured shape, ~38.6k train questions such as "what color is the shape?"), in the
  package's own order (image by image), paths from `get_{split}_image_paths()`.
- `folder_items(root, pattern, questions)`: image files under a folder (sorted glob). With a
  sidecar (`.json`: a list of objects, or `.jsonl`: one object a line) each object
  `{"image": relative-or-absolute path, "question": str, "answer": str}` becomes one item;
  without one, every image yields a single item with an empty question and answer (useful
  for embedding only). A malformed sidecar raises MiningError naming the file, the record and
  the field.
- `skimage_items(names)`: scikit-image's sample photos that ship inside the wheel (no
  download; `SKIMAGE_BUNDLED` lists them), question "which sample image is this?" and the
  sample's name as the answer. `stereo_motorcycle` contributes its left and right views, a
  real near-duplicate pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

from contextrl.errors import MiningError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SKIMAGE_QUESTION = "which sample image is this?"
SKIMAGE_BUNDLED: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut.png",), "brick": ("brick.png",), "camera": ("camera.png",), "cell": ("cell.png",),
    "chelsea": ("chelsea.png",), "coffee": ("coffee.png",), "coins": ("coins.png",), "colorwheel": ("color.png",),
    "grass": ("grass.png",), "gravel": ("gravel.png",), "horse": ("horse.png",), "hubble_deep_field": ("hubble_deep_field.jpg",),
    "immunohistochemistry": ("ihc.png",), "logo": ("logo.png",), "microaneurysms": ("microaneurysms.png",),
    "moon": ("moon.png",), "page": ("page.png",), "retina": ("retina.jpg",), "rocket": ("rocket.jpg",), "text": ("text.png",),
    "shepp_logan_phantom": ("phantom.png",), "stereo_motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),
}
"""scikit-image sample name -> the file(s) bundled in `skimage.data.data_dir` (no download needed)."""


@dataclass(frozen=True)
class VQAItem:
    """One question about one image file."""

    image_id: str
    """Stable id of the image within its source (e.g. easy-VQA's image number)."""
    image_path: str
    """Path of the image file."""
    question: str
    answer: str


def easy_vqa_items(split: Literal["train", "test"] = "train", limit: int | None = None) -> Iterator[VQAItem]:
    """easy-VQA questions, streamed in the package's order; `limit`: at most this many items."""
    try:
        import easy_vqa
    except ImportError:
        raise MiningError("easy-vqa is not installed: `pip install easy-vqa` (or `contextrl[images]`)") from None
    if split not in ("train", "test"):
        raise MiningError(f"easy_vqa_items: split={split!r}: use 'train' or 'test'")
    questions, answers, ids = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    for k, (q, a, i) in enumerate(zip(questions, answers, ids)):
        if limit is not None and k >= limit:
            return
        yield VQAItem(image_id=f"easy-vqa/{split}/{i}", image_path=paths[i], question=q, answer=a)


def _sidecar_records(path: Path) -> Iterator[tuple[str, object]]:
    """(where, record) per sidecar record: "file:line" for JSONL, "file[index]" for JSON."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise MiningError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one "
                                      '{"image": ..., "question": ..., "answer": ...} object') from None
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MiningError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list):
            raise MiningError(f"{path}: expected a JSON list of {{\"image\", \"question\", \"answer\"}} objects, "
                              f"got {type(data).__name__}")
        for k, rec in enumerate(data):
            yield f"{path}[{k}]", rec
    else:
        raise MiningError(f"{path}: questions sidecar must be .json (a list) or .jsonl (one object a line)")


def folder_items(root: str | Path, pattern: str = "**/*", questions: str | Path | None = None) -> Iterator[VQAItem]:
    """Items for the images under `root` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise MiningError(f"image folder {root} does not exist or is not a directory")
    if questions is None:
        for p in sorted(root.glob(pattern)):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                yield VQAItem(image_id=str(p.relative_to(root)), image_path=str(p), question="", answer="")
        return
    sidecar = Path(questions)
    if not sidecar.is_file():
        raise MiningError(f"questions sidecar {sidecar} does not exist")
    for where, rec in _sidecar_records(sidecar):
        if not isinstance(rec, dict):
            raise MiningError(f"{where}: expected an object with fields image, question, answer; got {type(rec).__name__}")
        for name in ("image", "question", "answer"):
            if name not in rec:
                raise MiningError(f"{where}: field '{name}' is missing (each record needs image, question, answer)")
            if not isinstance(rec[name], str):
                raise MiningError(f"{where}: field '{name}' must be a string, got {type(rec[name]).__name__}")
        image = Path(rec["image"])
        path = image if image.is_absolute() else root / image
        if not path.is_file():
            raise MiningError(f"{where}: field 'image': {path} does not exist")
        yield VQAItem(image_id=rec.get("id") if isinstance(rec.get("id"), str) else str(image), image_path=str(path),
                      question=rec["question"], answer=rec["answer"])


def skimage_items(names: Sequence[str] | None = None) -> Iterator[VQAItem]:
    """scikit-image's bundled sample photos (default: all of `SKIMAGE_BUNDLED`)."""
    try:
        from skimage import data as skdata
    except ImportError:
        raise MiningError("scikit-image is not installed: `pip install scikit-image` (or `contextrl[images]`)") from None
    base = Path(skdata.data_dir)
    for name in names if names is not None else SKIMAGE_BUNDLED:
        if name not in SKIMAGE_BUNDLED:
            raise MiningError(f"skimage sample {name!r} is not bundled offline; choose from {sorted(SKIMAGE_BUNDLED)}")
        for fname in SKIMAGE_BUNDLED[name]:
            path = base / fname
            if not path.is_file():
                raise MiningError(f"skimage sample {name!r}: {path} is missing from this scikit-image install")
            yield VQAItem(image_id=f"skimage/{Path(fname).stem}", image_path=str(path), question=SKIMAGE_QUESTION, answer=name)


__all__ = ["IMAGE_SUFFIXES", "SKIMAGE_BUNDLED", "SKIMAGE_QUESTION", "VQAItem", "easy_vqa_items", "folder_items", "skimage_items"]
