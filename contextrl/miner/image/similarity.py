"""The similarity-search miner: image pairs (I, I') that look alike but answer a question differently.

Paper recipe (DESIGN.md, "Multimodal"): embed images, keep a partner I' of I when
cos(f(I), f(I')) >= alpha (0.85) and its answer A' != A to the same question. Pipeline:

1. stream `VQAItem`s; each distinct image file is embedded once (by the VLM's own vision
   tower, mean-pooled, when `vlm` names the policy's checkpoint; otherwise by the weight-free
   pixel baseline, since no pretrained VLM can be downloaded here), in batches of `batch_size`
   as the stream is read (pixels of at most one batch are in memory; what is kept per image
   is its embedding row and its question -> answer map);
2. `search.find_pairs` over all rows: image pairs with cos >= alpha;
3. per image pair, highest cosine first: questions both images have (exact text after
   case/whitespace folding), whose answers differ;
4. `image_difference` locates the decisive difference: bounding boxes of the connected
   blobs of pixels that differ by more than `diff_threshold` in some channel. Pairs of
   different image sizes are rejected (no pixel alignment, and verification would reject
   them as a formatting cue), as are pairs that differ nowhere or almost everywhere
   (`max_changed_fraction`: a global change, not a local one);
5. `verify_pair` (identical bytes, image format/mode/size, answer support).

Deliberate choices: the earlier image in the stream is C+ (its answer is A), so reruns give
the same pairs; an image takes part in at most `max_pairs_per_image` pairs and an image pair
gives at most `max_questions_per_image_pair` questions, so one dense cluster of look-alikes
cannot flood the set. With the pixel embedder (16x16 RGB), alpha 0.85 on the easy-VQA
train split (4,000 images, 38,575 questions) links ~4.3k of its 8M image pairs; ~1.4k
(image pair, question) candidates have differing answers and ~1.2k pairs pass the caps and
verification, in about 3 s on two cores (`benchmarks/images.py` reports it).

`SimilarityMiner(config, embedder).mine(items) -> (pairs, funnel)`; funnel stages (units):
items (items), images, embedded (images), neighbour_pairs (image pairs), same_question,
answer_differs, within_caps (candidates), localised, verified (pairs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from contextrl.errors import ConfigError, MiningError
from contextrl.configs import FromDict
from contextrl.miner.funnel import Funnel, StageClock
from contextrl.miner.image.data import VQAItem
from contextrl.miner.image.embed import EMBEDDERS, EmbedderName, ImageEmbedder, make_embedder
from contextrl.miner.image.shapes import as_rgb, changed_mask
from contextrl.miner.image.search import BACKENDS, METHODS, Backend, Method, NeighbourPairs, SearchConfig, find_pairs
from contextrl.miner.pair import Context, ContrastivePair, Difference, Provenance
from contextrl.miner.verify import VerifyConfig, verify_pair

Region = tuple[int, int, int, int]
STAGES: tuple[tuple[str, str], ...] = (
    ("items", "items"), ("images", "images"), ("embedded", "images"), ("neighbour_pairs", "image pairs"),
    ("same_question", "candidates"), ("answer_differs", "candidates"), ("within_caps", "candidates"),
    ("localised", "pairs"), ("verified", "pairs"),
)


@dataclass(frozen=True)
class SimilarityConfig(FromDict):
    """Settings of `SimilarityMiner` (validated at construction)."""

    alpha: float = 0.85
    """Partner threshold: keep image pairs with cosine >= alpha; in (-1, 1]."""
    embedder: EmbedderName = "auto"
    """Embedder when none is passed to the miner: "auto" (the vision tower of `vlm` when set,
    else "pixel"), "vision_tower" (needs `vlm`), "pixel" (RGB thumbnails, no weights) or "hash"."""
    vlm: str | None = None
    """A saved VLM directory (the policy's own checkpoint) whose vision tower, mean-pooled, embeds
    the images; None: no weights are used (the pixel baseline)."""
    pixel_side: int = 16
    """Thumbnail side of the pixel/hash embedder (16: 16x16)."""
    batch_size: int = 256
    """Images loaded and embedded per batch (bounds pixel memory)."""
    backend: Backend = "auto"
    """Search backend: "faiss", "numpy" or "auto" (faiss when installed)."""
    method: Method = "auto"
    """Search method: "exact", "ivf" (approximate, for 50k+ images) or "auto"."""
    max_pairs_per_image: int = 4
    """An image takes part (as C+ or C-) in at most this many kept pairs; >= 1."""
    max_questions_per_image_pair: int = 2
    """At most this many questions per image pair; >= 1."""
    diff_threshold: int = 32
    """A pixel differs when some channel differs by more than this (0-255)."""
    min_region_pixels: int = 4
    """Blobs of differing pixels smaller than this are noise, not a region; >= 1."""
    max_regions: int = 4
    """More blobs than this are merged into one bounding box; >= 1."""
    max_changed_fraction: float = 0.5
    """Reject pairs whose images differ in more than this fraction of pixels; in (0, 1]."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    """Verification thresholds (a mapping is accepted and converted)."""
    keep_rejected: bool = False
    """Also return localised pairs that failed verification (with their verdict)."""
    progress: bool = True
    """Progress bars while reading, embedding and searching."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"SimilarityConfig.{name}={getattr(self, name)!r}: {fix}")

        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not -1.0 < self.alpha <= 1.0:
            raise bad("alpha", "use a cosine threshold in (-1, 1], e.g. 0.85")
        if self.embedder not in EMBEDDERS:
            raise bad("embedder", f"choose one of {list(EMBEDDERS)} (or pass an ImageEmbedder to SimilarityMiner)")
        if self.vlm is not None and (not isinstance(self.vlm, str) or not self.vlm):
            raise bad("vlm", "use the path of a saved VLM directory, or null")
        if self.embedder == "vision_tower" and self.vlm is None:
            raise bad("embedder", "'vision_tower' needs vlm= (a saved VLM directory); or use 'auto'/'pixel'")
        if self.backend not in BACKENDS:
            raise bad("backend", f"choose one of {list(BACKENDS)}")
        if self.method not in METHODS:
            raise bad("method", f"choose one of {list(METHODS)}")
        for name, low in (("pixel_side", 2), ("batch_size", 1), ("max_pairs_per_image", 1), ("max_questions_per_image_pair", 1),
                          ("diff_threshold", 0), ("min_region_pixels", 1), ("max_regions", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise bad(name, f"use an integer >= {low}")
        if self.diff_threshold > 254:
            raise bad("diff_threshold", "use an integer in [0, 254]")
        f = self.max_changed_fraction
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0.0 < f <= 1.0:
            raise bad("max_changed_fraction", "use a fraction in (0, 1]")
        if isinstance(self.verify, Mapping):
            object.__setattr__(self, "verify", VerifyConfig.from_dict(self.verify))
        if not isinstance(self.verify, VerifyConfig):
            raise bad("verify", "use a VerifyConfig or a mapping of its fields")
        for name in ("keep_rejected", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "use true or false")
        SearchConfig(alpha=self.alpha, backend=self.backend, method=self.method)  # faiss requested but missing: fail now


    def params(self) -> dict[str, Any]:
        """The parameters recorded in each pair's provenance."""
        return {"alpha": self.alpha, "max_pairs_per_image": self.max_pairs_per_image,
                "max_questions_per_image_pair": self.max_questions_per_image_pair, "diff_threshold": self.diff_threshold}


def image_difference(a: np.ndarray, b: np.ndarray, threshold: int = 32, min_pixels: int = 4,
                     max_regions: int = 4) -> tuple[tuple[Region, ...], float]:
    """Regions (x0, y0, x1, y1; end-exclusive) where two same-size RGB arrays differ, and the
    fraction of pixels that differ. Blobs (8-connected) below `min_pixels` are dropped; more
    than `max_regions` blobs become one bounding box."""
    from scipy import ndimage

    if a.shape != b.shape:
        raise MiningError(f"image_difference: sizes differ ({a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]})")
    changed = changed_mask(a, b, threshold)
    fraction = float(changed.mean())
    labels, count = ndimage.label(changed, structure=np.ones((3, 3), bool))
    if count == 0:
        return (), fraction
    sizes = np.bincount(labels.ravel())[1:]
    boxes = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
             for k, sl in enumerate(ndimage.find_objects(labels)) if sl is not None and sizes[k] >= min_pixels]
    if len(boxes) > max_regions:
        boxes = [(min(x[0] for x in boxes), min(x[1] for x in boxes), max(x[2] for x in boxes), max(x[3] for x in boxes))]
    return tuple(tuple(int(v) for v in box) for box in sorted(boxes)), fraction


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return as_rgb(im)


class SimilarityMiner:
    """Mine image pairs by similarity search (see the module docstring)."""

    def __init__(self, config: SimilarityConfig | None = None, embedder: ImageEmbedder | None = None):
        self.config = config or SimilarityConfig()
        self.embedder = embedder or make_embedder(self.config.embedder, side=self.config.pixel_side,
                                                  batch_size=self.config.batch_size, progress=False, vlm=self.config.vlm)

    # ------------------------------------------------------------------ reading + embedding

    def _read(self, items: Iterable[VQAItem], funnel: Funnel, notes: Counter):
        """Consume the stream; embed new images a batch at a time. Returns (paths, ids, qa, emb)."""
        from tqdm.auto import tqdm

        cfg = self.config
        row_of: dict[str, int] = {}
        paths: list[str] = []
        ids: list[str] = []
        qa: list[dict[str, tuple[str, str]]] = []
        chunks: list[np.ndarray] = []
        pending: list[int] = []

        def flush() -> None:
            images, ok = [], []
            for r in pending:
                try:
                    with Image.open(paths[r]) as im:
                        images.append(im.convert("RGB"))
                    ok.append(True)
                except Exception as e:  # an unreadable file is a funnel count, not a crash
                    notes[f"unreadable: {type(e).__name__}"] += 1
                    ok.append(False)
            vecs = self.embedder.embed(images) if images else np.zeros((0, self.embedder.dim), np.float32)
            if vecs.shape != (len(images), self.embedder.dim) or vecs.dtype != np.float32:
                raise MiningError(f"embedder {self.embedder.name}: returned {vecs.dtype} {vecs.shape}, expected float32 "
                                  f"({len(images)}, {self.embedder.dim})")
            block = np.zeros((len(pending), self.embedder.dim), np.float32)  # unreadable: zero row, similar to nothing
            block[np.flatnonzero(ok)] = vecs
            chunks.append(block)
            funnel["embedded"] += len(images)
            pending.clear()

        total = len(items) if hasattr(items, "__len__") else None
        for item in tqdm(items, total=total, desc="similarity: read+embed", disable=not cfg.progress, leave=False):
            funnel["items"] += 1
            path = str(item.image_path)
            row = row_of.get(path)
            if row is None:
                row = row_of[path] = len(paths)
                paths.append(path)
                ids.append(str(item.image_id))
                qa.append({})
                pending.append(row)
                funnel["images"] += 1
            key = _norm(item.question)
            if key:
                prev = qa[row].setdefault(key, (item.question, item.answer))
                if _norm(prev[1]) != _norm(item.answer):
                    notes["conflicting answers (first kept)"] += 1
            if len(pending) >= cfg.batch_size:
                flush()
        if pending:
            flush()
        emb = np.concatenate(chunks) if chunks else np.zeros((0, self.embedder.dim), np.float32)
        return paths, ids, qa, emb

    # ------------------------------------------------------------------ mining

    def mine(self, items: Iterable[VQAItem]) -> tuple[list[ContrastivePair], Funnel]:
        """Mine pairs from a stream of items; returns (pairs, funnel). Pairs are verified (rejected ones
        are included only with `keep_rejected`)."""
        cfg = self.config
        funnel = Funnel("similarity", {s: 0 for s, _ in STAGES}, dict(STAGES))
        notes: Counter = Counter()
        clock = StageClock()
        paths, ids, qa, emb = self._read(items, funnel, notes)
        clock.lap("read_embed")
        found = find_pairs(emb, SearchConfig(alpha=cfg.alpha, backend=cfg.backend, method=cfg.method, progress=cfg.progress))
        clock.lap("search")
        funnel["neighbour_pairs"] = len(found)
        pairs = self._pairs(found.by_cos(), paths, ids, qa, funnel, notes)
        clock.lap("pairs")
        funnel.note("embedder", self.embedder.name).note("search", {"method": found.method, "backend": found.backend, **found.stats})
        funnel.note("params", cfg.params()).note("rejects", dict(notes)).note("seconds", clock.wall)
        return pairs, funnel

    def _pairs(self, found: NeighbourPairs, paths: list[str], ids: list[str], qa: list[dict[str, tuple[str, str]]],
               funnel: Funnel, notes: Counter) -> list[ContrastivePair]:
        cfg = self.config
        used = np.zeros(len(paths), np.int64)
        out: list[ContrastivePair] = []
        for i, j, cos in found:
            shared = sorted(qa[i].keys() & qa[j].keys())
            funnel["same_question"] += len(shared)
            differ = [q for q in shared if _norm(qa[i][q][1]) != _norm(qa[j][q][1])]
            funnel["answer_differs"] += len(differ)
            if not differ:
                continue
            if used[i] >= cfg.max_pairs_per_image or used[j] >= cfg.max_pairs_per_image:
                notes["cap: image already in max_pairs_per_image pairs"] += len(differ)
                continue
            take = differ[:min(cfg.max_questions_per_image_pair, cfg.max_pairs_per_image - int(max(used[i], used[j])))]
            notes["cap: max_questions_per_image_pair"] += len(differ) - len(take)
            funnel["within_caps"] += len(take)
            diff = self._difference(paths[i], paths[j], notes)
            if diff is None:
                continue
            for q in take:
                funnel["localised"] += 1
                (question, answer), (_, other) = qa[i][q], qa[j][q]
                pair = verify_pair(ContrastivePair(
                    kind="image", query=question, answer=answer,
                    positive=Context(image_path=paths[i], supported_answer=answer),
                    negative=Context(image_path=paths[j], supported_answer=other),
                    difference=diff,
                    provenance=Provenance(miner="similarity", sources=(ids[i], ids[j]),
                                          params={**cfg.params(), "cos": round(float(cos), 6), "embedder": self.embedder.name}),
                ), cfg.verify)
                if pair.verdict.ok:
                    funnel["verified"] += 1
                    used[i] += 1
                    used[j] += 1
                else:
                    for check in pair.verdict.failed:
                        notes[f"verify: {check.name}"] += 1
                if pair.verdict.ok or cfg.keep_rejected:
                    out.append(pair)
        return out

    def _difference(self, path_a: str, path_b: str, notes: Counter) -> Difference | None:
        cfg = self.config
        try:
            a, b = _load_rgb(path_a), _load_rgb(path_b)
        except Exception as e:  # vanished or corrupt since embedding
            notes[f"localise: unreadable ({type(e).__name__})"] += 1
            return None
        if a.shape != b.shape:
            notes["localise: image sizes differ"] += 1
            return None
        regions, fraction = image_difference(a, b, cfg.diff_threshold, cfg.min_region_pixels, cfg.max_regions)
        if not regions:
            notes["localise: no visible difference"] += 1
            return None
        if fraction > cfg.max_changed_fraction:
            notes["localise: global change"] += 1
            return None
        return Difference(positive=regions, negative=regions)


__all__ = ["STAGES", "SimilarityConfig", "SimilarityMiner", "image_difference"]
