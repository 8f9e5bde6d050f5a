"""The edit miner: turn (image, question, answer) items into verified image pairs by editing.

For each item the miner picks the one edit that should change the answer (a colour
question: recolour the shape; "what shape": redraw it as another kind; "is there a red
shape?": remove it, or recolour it red when it is absent; a region's colour: set its hue; a
bar's value or a digit: redraw that bar or digit), applies it with an `ImageEditor`, and
keeps the result only when

1. the edit stayed local (`ssim.check_edit`: SSIM outside the region, no global change, not
   a no-op), and
2. the answer really changed: the pixel oracle (`oracle.answer_from_pixels`) reads the
   edited image and must give exactly the answer the edit was meant to produce, different
   from the original's. The oracle also reads the original first: items whose stored answer
   disagrees with their own pixels are dropped rather than turned into mislabelled pairs.

Then it saves the edited image (PNG, content-hashed name under `out_dir/images/`), builds
`ContrastivePair(kind="image")` with the edited box(es) as the decisive difference, and runs
`verify_pair` with the oracle as its support check; the filter's checks and an
`answer_oracle` check (what the pixels of each side answer) are appended to the verdict, so
the report shows why the pair was kept. The funnel counts candidates ->
editable -> edited -> passes_ssim_filter -> answer_changes -> verified.

The expected answer comes from the edit, never from a model: the oracle is the ground truth
here, so a diffusion editor (`DiffusersEditor`) is judged by the same gate as the
procedural one and its failed edits show up as funnel losses, not as wrong pairs.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import numpy as np
from PIL import Image

from contextrl.errors import ConfigError, MiningError
from contextrl.configs import FromDict
from contextrl.miner.funnel import Funnel
from contextrl.miner.image.charts import BarChartLayout
from contextrl.miner.image.edit import ImageEditor, ProceduralEditor
from contextrl.miner.image.edit_sources import (SKIMAGE_SAMPLES, VQALike, chart_items, easy_vqa_sample, make_item, save_png,
                                                 skimage_region_items)
from contextrl.miner.image.instruction import EditInstruction
from contextrl.miner.image.oracle import REGION_HUES, Question, answer_from_pixels, parse_question
from contextrl.miner.image.shapes import PALETTE, SHAPES
from contextrl.miner.image.ssim import EditFilterConfig, check_edit
from contextrl.miner.pair import Check, Context, ContrastivePair, Difference, Provenance, Verdict
from contextrl.miner.verify import VerifyConfig, verify_pair

STAGES: tuple[str, ...] = ("candidates", "editable", "edited", "passes_ssim_filter", "answer_changes", "verified")


@dataclass(frozen=True)
class EditMinerConfig(FromDict):
    """Settings of `mine_edits` (validated at construction; ConfigError names the field)."""

    seed: int = 0
    """Seeds the choice of the new colour/shape/value and the editor's own draws."""
    presence_edit: Literal["remove", "replace"] = "remove"
    """How "is there a red shape?" goes from yes to no: remove the shape, or replace it
    (recolour / redraw it as another kind, keeping one shape in the image)."""
    max_pairs: int | None = None
    """Stop after this many verified pairs (None: mine every item)."""
    keep_rejected: bool = False
    """Also return pairs that `verify_pair` rejected (with their verdicts), e.g. for a report."""
    progress: bool = True
    """Show a tqdm progress bar."""
    filter: EditFilterConfig = field(default_factory=EditFilterConfig)
    """Thresholds of the SSIM / global-change filter."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    """Settings of `verify_pair`."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"EditMinerConfig.{name}={getattr(self, name)!r}: {fix}")

        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise bad("seed", "use an integer >= 0")
        if self.presence_edit not in ("remove", "replace"):
            raise bad("presence_edit", "use 'remove' (delete the shape) or 'replace' (recolour / reshape it)")
        if self.max_pairs is not None and (not isinstance(self.max_pairs, int) or isinstance(self.max_pairs, bool) or self.max_pairs < 1):
            raise bad("max_pairs", "use an integer >= 1, or null for no limit")
        for name in ("keep_rejected", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "use true or false")
        if isinstance(self.filter, Mapping):
            object.__setattr__(self, "filter", EditFilterConfig.from_dict(self.filter))
        if isinstance(self.verify, Mapping):
            object.__setattr__(self, "verify", VerifyConfig.from_dict(self.verify))
        if not isinstance(self.filter, EditFilterConfig):
            raise bad("filter", "use an EditFilterConfig or a mapping of its fields")
        if not isinstance(self.verify, VerifyConfig):
            raise bad("verify", "use a VerifyConfig or a mapping of its fields")



def plan_edit(q: Question, answer: str, rng: np.random.Generator,
              presence_edit: str = "remove") -> tuple[EditInstruction, str] | None:
    """The edit that should change `answer` to another, and that new answer (None: no such edit)."""
    def pick(options: Iterable[str]) -> str:
        opts = sorted(set(options))
        return opts[int(rng.integers(len(opts)))]

    if q.kind == "colour":
        new = pick(c for c in PALETTE if c != answer)
        return EditInstruction("recolour", colour=new), new
    if q.kind == "shape":
        new = pick(s for s in SHAPES if s != answer)
        return EditInstruction("reshape", shape=new), new
    if q.kind in ("has_colour", "has_shape"):
        flipped = {"yes": "no", "no": "yes"}.get(answer)
        if flipped is None:
            return None
        present = (answer == "yes") != q.negated
        colour_q = q.kind == "has_colour"
        if not present:  # make it present: give the one shape the asked colour / kind
            ins = EditInstruction("recolour", colour=q.target) if colour_q else EditInstruction("reshape", shape=q.target)
        elif presence_edit == "remove":
            ins = EditInstruction("remove")
        elif colour_q:
            ins = EditInstruction("recolour", colour=pick(c for c in PALETTE if c != q.target))
        else:
            ins = EditInstruction("reshape", shape=pick(s for s in SHAPES if s != q.target))
        return ins, flipped
    if q.kind == "region_colour":
        new = pick(c for c in REGION_HUES if c != answer)
        return EditInstruction("recolour", region=q.region, colour=new), new
    if q.kind == "bar_value":
        new = pick(str(v) for v in range(1, BarChartLayout().max_value + 1) if str(v) != answer)
        return EditInstruction("set_bar", bar=q.bar, value=int(new)), new
    if q.kind == "digit":
        new = pick(str(d) for d in range(10) if str(d) != answer)
        return EditInstruction("set_digit", digit=int(new)), new
    return None


def _load(path: str) -> tuple[Image.Image, bool]:
    """The image as RGB, and whether the file itself is already an RGB PNG (usable as C+ as is)."""
    with Image.open(path) as im:
        native = im.format == "PNG" and im.mode == "RGB"
        return im.convert("RGB"), native


def mine_edits(items: Iterable[VQALike], out_dir: str | Path, config: EditMinerConfig = EditMinerConfig(),
               editor: ImageEditor | None = None) -> tuple[list[ContrastivePair], Funnel]:
    """Mine image pairs by editing (see the module docstring). Returns the pairs (verified
    ones; rejected ones too with `keep_rejected`) and the funnel."""
    from tqdm.auto import tqdm

    editor = editor if editor is not None else ProceduralEditor(seed=config.seed)
    image_dir = Path(out_dir).resolve() / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    funnel = Funnel("edit", {s: 0 for s in STAGES}, {s: "items" for s in STAGES})
    rejects: Counter = Counter()
    ops: Counter = Counter()
    seconds = {"load": 0.0, "edit": 0.0, "filter": 0.0, "oracle": 0.0, "save_verify": 0.0}
    pairs: list[ContrastivePair] = []
    seen: set[str] = set()
    n_ok = 0
    total = len(items) if hasattr(items, "__len__") else None
    for item in tqdm(items, total=total, desc="edit-mining", disable=not config.progress, leave=False):
        funnel["candidates"] += 1
        t = time.perf_counter()
        q = parse_question(item.question)
        if q is None:
            rejects["unsupported_question"] += 1
            continue
        try:
            image, native = _load(item.image_path)
        except (OSError, ValueError) as e:
            rejects["unreadable_image"] += 1
            funnel.notes.setdefault("example_errors", []).append(f"{item.image_path}: {e}"[:200])
            continue
        seconds["load"] += time.perf_counter() - t
        t = time.perf_counter()
        if answer_from_pixels(image, q) != item.answer:
            rejects["label_disagrees_with_pixels"] += 1
            seconds["oracle"] += time.perf_counter() - t
            continue
        seconds["oracle"] += time.perf_counter() - t
        key = hashlib.sha256(f"{config.seed}|{item.image_path}|{item.question}|{item.answer}".encode()).digest()
        plan = plan_edit(q, item.answer, np.random.default_rng(int.from_bytes(key[:8], "little")), config.presence_edit)
        if plan is None:
            rejects["no_edit_changes_this_answer"] += 1
            continue
        instruction, expected = plan
        funnel["editable"] += 1
        t = time.perf_counter()
        try:
            result = editor.edit(image, instruction)
        except MiningError as e:
            rejects[f"edit_failed:{instruction.op}"] += 1
            funnel.notes.setdefault("example_errors", []).append(str(e)[:200])
            continue
        finally:
            seconds["edit"] += time.perf_counter() - t
        funnel["edited"] += 1
        ops[instruction.op] += 1
        t = time.perf_counter()
        local = check_edit(image, result.image, result.boxes, config.filter)
        seconds["filter"] += time.perf_counter() - t
        if not local.ok:
            for c in local.failed:
                rejects[f"filter:{c.name}"] += 1
            continue
        funnel["passes_ssim_filter"] += 1
        t = time.perf_counter()
        got = answer_from_pixels(result.image, q)
        seconds["oracle"] += time.perf_counter() - t
        if got != expected or got == item.answer:
            rejects["answer_unchanged" if got == item.answer else "answer_not_as_planned"] += 1
            continue
        funnel["answer_changes"] += 1
        t = time.perf_counter()
        pos_path = Path(item.image_path).resolve() if native else save_png(image, image_dir)
        neg_path = save_png(result.image, image_dir)
        boxes = tuple(tuple(int(v) for v in b) for b in result.boxes)
        pair = ContrastivePair(
            kind="image", query=item.question, answer=item.answer,
            positive=Context(image_path=str(pos_path), supported_answer=item.answer),
            negative=Context(image_path=str(neg_path), supported_answer=got),
            difference=Difference(positive=boxes, negative=boxes),
            provenance=Provenance(miner="edit", sources=(str(item.image_path), str(item.image_id)), params={
                "editor": editor.name, "instruction": instruction.to_text(), "op": instruction.op, "seed": config.seed,
                "question_kind": q.kind, "expected_answer": expected, "oracle_answer": got,
                "filter": local.measurements(), "edit": dict(result.details),
            }),
        )
        pair = verify_pair(pair, config.verify, support=_support_oracle(q))
        oracle = Check("answer_oracle", True, f"read from the pixels: C+ answers {item.answer!r}, C- answers {got!r} "
                                               f"(the edit '{instruction.to_text()}' was meant to give {expected!r})")
        pair = pair.with_verdict(Verdict.from_checks((*pair.verdict.reasons, *local.reasons, oracle)))
        seconds["save_verify"] += time.perf_counter() - t
        if pair.id in seen:
            rejects["duplicate"] += 1
            continue
        seen.add(pair.id)
        if pair.verdict.ok:
            funnel["verified"] += 1
            n_ok += 1
        else:
            for c in pair.verdict.failed:
                rejects[f"verify:{c.name}"] += 1
        if pair.verdict.ok or config.keep_rejected:
            pairs.append(pair)
        if config.max_pairs is not None and n_ok >= config.max_pairs:
            break
    funnel.note("editor", editor.name).note("rejects", dict(rejects)).note("ops", dict(ops))
    funnel.note("seconds", {k: round(v, 3) for k, v in seconds.items()})
    return pairs, funnel


def _support_oracle(q: Question):
    """`verify_pair`'s support oracle: does the side's image, read from its pixels, give the pair's answer?"""
    def support(pair: ContrastivePair, side: str) -> bool | None:
        path = getattr(pair, side).image_path
        try:
            with Image.open(path) as im:
                got = answer_from_pixels(im.convert("RGB"), q)
        except OSError:
            return None
        return None if got is None else got == pair.answer

    return support


def _io_baseline(items: list, out_dir: Path) -> float:
    """Seconds to only read each item's image and write it back as PNG (the same codec and
    level the miner uses): the floor any edit miner pays, measured in the same run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for item in items:
        image, _ = _load(item.image_path)
        save_png(image, out_dir)
    return time.perf_counter() - t


def edit_pairs_per_minute(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Benchmark the procedural editor on real images: easy-VQA questions plus scikit-image
    region-colour items (quick: 80 + 20 items; full: 800 + 200), mined end to end (edit, SSIM
    filter, oracle, save, verify) in a temporary directory that is removed afterwards.

    `edit_vs_io_ratio` is the mining time over the time to merely load and re-save the same
    images in the same run (the conventions' ratio against a same-run baseline); absolute
    seconds are informative only. Per-source funnels and phase seconds are included."""
    n_evqa, n_sk = (80, 20) if quick else (800, 200)
    tmp = Path(tempfile.mkdtemp(prefix="contextrl-edit-bench-"))
    try:
        out: dict[str, Any] = {}
        total_pairs = total_items = 0
        total_s = base_s = 0.0
        for source, items in (("easy_vqa", easy_vqa_sample(n_evqa, seed)), ("skimage", skimage_region_items(tmp, n_sk, seed))):
            base_s += _io_baseline(items, tmp / source / "baseline")
            t = time.perf_counter()
            pairs, funnel = mine_edits(items, tmp / source, EditMinerConfig(seed=seed, progress=False))
            secs = time.perf_counter() - t
            out[f"edit_{source}_funnel"] = funnel.to_dict()
            out[f"edit_{source}_phase_seconds"] = funnel.notes["seconds"]
            out[f"edit_{source}_pairs_per_minute"] = round(60.0 * len(pairs) / secs, 1) if secs else 0.0
            total_pairs, total_items, total_s = total_pairs + len(pairs), total_items + len(items), total_s + secs
        return {"edit_pairs_per_minute": round(60.0 * total_pairs / total_s, 1) if total_s else 0.0,
                "edit_candidates": total_items, "edit_pairs": total_pairs, "edit_seconds": round(total_s, 3),
                "edit_io_baseline_seconds": round(base_s, 3), "edit_vs_io_ratio": round(total_s / base_s, 2) if base_s else None, **out}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = [
    "EditMinerConfig", "SKIMAGE_SAMPLES", "STAGES", "VQALike", "chart_items", "easy_vqa_sample", "edit_pairs_per_minute",
    "make_item", "mine_edits", "plan_edit", "skimage_region_items",
]
