"""Contrastive pairs: the one record that leaves the miner.

A pair is `z = (Q, A, C+, C-)`: a query, an answer, a context that supports the answer
and a near-identical confounder that does not (see DESIGN.md, "The method"). Contexts are
rendered trajectories (text) or images (file paths). The decisive difference between the
two contexts is recorded explicitly so that truncation never cuts it and verification can
tell decisive differences from shortcut cues.

Conventions:
- Text spans are line ranges `(start, end)`: 0-based, end-exclusive, over
  `split_lines(text)` (lines split on "\\n" only, so a "\\r" stays visible). An empty span
  `(i, i)` marks where the other context has lines this one lacks.
- Image spans are regions `(x0, y0, x1, y1)` in pixels.
- `id` is a content hash of (kind, query, answer, positive, negative), so duplicates
  collapse; provenance and verdict are not part of it.

Files are JSONL (one pair per line), written atomically (temp file + rename).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, NamedTuple

from contextrl.errors import MiningError, TrajectoryFormatError
from contextrl.trajectory import Trajectory

if TYPE_CHECKING:
    import datasets

PAIR_FORMAT_VERSION = 1
Kind = Literal["trajectory", "image"]
KINDS: tuple[str, ...] = ("trajectory", "image")
Span = tuple[int, ...]


def split_lines(text: str) -> list[str]:
    """Split text into lines on "\\n" only (a trailing newline adds no empty line)."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


@dataclass(frozen=True)
class Context:
    """One side of a pair: rendered text (trajectory pairs) or an image file (image pairs)."""

    text: str | None = None
    """What the policy reads for a trajectory context (already rendered and masked)."""
    image_path: str | None = None
    """Path of the image file for an image context."""
    trajectory: Trajectory | None = None
    """The trajectory `text` was rendered from, when there is one (kept for verification)."""
    supported_answer: str | None = None
    """The answer this context supports, when known (for C-: the confounder's own answer A')."""

    @classmethod
    def from_trajectory(cls, traj: Trajectory, mask_patches: bool = True, supported_answer: str | None = None) -> "Context":
        """Render a trajectory (patch content masked by default) into a text context."""
        from contextrl.miner.render import render_trajectory

        return cls(text=render_trajectory(traj, mask_patches=mask_patches), trajectory=traj, supported_answer=supported_answer)

    def content_key(self) -> dict[str, Any]:
        """What identifies this context's content (hashed into the pair id)."""
        return {"text": self.text, "image_path": self.image_path}


@dataclass(frozen=True)
class Difference:
    """The decisive difference: spans in each context (line ranges or image regions)."""

    positive: tuple[Span, ...] = ()
    negative: tuple[Span, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.positive or self.negative)


@dataclass(frozen=True)
class Provenance:
    """Where a pair came from."""

    miner: str = ""
    """Miner name, e.g. "condition_filter", "branch", "similarity", "edit"."""
    sources: tuple[str, ...] = ()
    """Source ids: trajectory episode ids or file paths, image paths, dataset rows."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Miner parameters that produced the pair (JSON-serialisable)."""


class Check(NamedTuple):
    """One verification check: its name, whether it passed, and why."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of verification: ok when every check passed."""

    ok: bool
    reasons: tuple[Check, ...] = ()

    @classmethod
    def from_checks(cls, checks: Iterable[Check]) -> "Verdict":
        """A verdict that is ok when every check passed."""
        checks = tuple(Check(*c) for c in checks)
        return cls(ok=all(c.passed for c in checks), reasons=checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that did not pass."""
        return tuple(c for c in self.reasons if not c.passed)


@dataclass(frozen=True)
class ContrastivePair:
    """`z = (Q, A, C+, C-)` plus the decisive difference, provenance and verdict."""

    kind: Kind
    query: str
    answer: str
    positive: Context
    negative: Context
    difference: Difference = Difference()
    provenance: Provenance = Provenance()
    verdict: Verdict | None = None
    """None until `verify_pair` has run."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MiningError(f"pair kind={self.kind!r} is not one of {KINDS}")
        for side in ("positive", "negative"):
            ctx: Context = getattr(self, side)
            if self.kind == "trajectory" and ctx.text is None:
                raise MiningError(f"{side}: a trajectory pair needs context text (use Context.from_trajectory)")
            if self.kind == "image" and not ctx.image_path:
                raise MiningError(f"{side}: an image pair needs image_path")
            width = 2 if self.kind == "trajectory" else 4
            n_lines = len(split_lines(ctx.text)) if ctx.text is not None else None
            for span in getattr(self.difference, side):
                if len(span) != width or not all(isinstance(v, int) for v in span):
                    raise MiningError(f"difference.{side}: span {span!r} must be {width} integers for a {self.kind} pair")
                if self.kind == "trajectory" and not (0 <= span[0] <= span[1] <= (n_lines or 0)):
                    raise MiningError(f"difference.{side}: line span {span!r} is outside the context's {n_lines} lines")
                if self.kind == "image" and not (span[0] <= span[2] and span[1] <= span[3]):
                    raise MiningError(f"difference.{side}: region {span!r} must satisfy x0<=x1 and y0<=y1")

    def __hash__(self) -> int:
        return hash(self.id)

    @cached_property
    def id(self) -> str:
        """Content hash of (kind, query, answer, positive, negative): 16 hex characters."""
        key = [self.kind, self.query, self.answer, self.positive.content_key(), self.negative.content_key()]
        blob = json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def with_verdict(self, verdict: Verdict) -> "ContrastivePair":
        """A copy with the verdict set."""
        return replace(self, verdict=verdict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what `write_pairs` writes per line)."""

        def ctx(c: Context) -> dict[str, Any]:
            return {
                "text": c.text,
                "image_path": c.image_path,
                "trajectory": c.trajectory.to_dict() if c.trajectory is not None else None,
                "supported_answer": c.supported_answer,
            }

        return {
            "format_version": PAIR_FORMAT_VERSION,
            "id": self.id,
            "kind": self.kind,
            "query": self.query,
            "answer": self.answer,
            "positive": ctx(self.positive),
            "negative": ctx(self.negative),
            "difference": {"positive": [list(s) for s in self.difference.positive], "negative": [list(s) for s in self.difference.negative]},
            "provenance": {"miner": self.provenance.miner, "sources": list(self.provenance.sources), "params": dict(self.provenance.params)},
            "verdict": None if self.verdict is None else {"ok": self.verdict.ok, "reasons": [list(c) for c in self.verdict.reasons]},
        }

    @classmethod
    def from_dict(cls, d: Any) -> "ContrastivePair":
        """Parse `to_dict` output; MiningError names the offending field. The stored id is
        ignored (ids are recomputed from content)."""
        obj = _obj(d, "pair")
        version = obj.get("format_version", PAIR_FORMAT_VERSION)
        if version != PAIR_FORMAT_VERSION:
            raise MiningError(f"field 'format_version': {version!r} is not supported (expected {PAIR_FORMAT_VERSION})")
        kind = _field(obj, "kind", str, "pair")
        if kind not in KINDS:
            raise MiningError(f"field 'kind': {kind!r} is not one of {KINDS}")
        diff = _obj(obj.get("difference") or {}, "difference")
        prov = _obj(obj.get("provenance") or {}, "provenance")
        verdict = None
        if obj.get("verdict") is not None:
            v = _obj(obj["verdict"], "verdict")
            reasons = []
            for i, r in enumerate(_field(v, "reasons", list, "verdict", default=[])):
                if not (isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and isinstance(r[1], bool) and isinstance(r[2], str)):
                    raise MiningError(f"field 'verdict.reasons[{i}]': expected [check, passed, detail], got {r!r}")
                reasons.append(Check(*r))
            verdict = Verdict(ok=_field(v, "ok", bool, "verdict"), reasons=tuple(reasons))
        params = _field(prov, "params", dict, "provenance", default={})
        return cls(
            kind=kind,
            query=_field(obj, "query", str, "pair"),
            answer=_field(obj, "answer", str, "pair"),
            positive=_context(obj.get("positive"), "positive"),
            negative=_context(obj.get("negative"), "negative"),
            difference=Difference(positive=_spans(diff, "positive"), negative=_spans(diff, "negative")),
            provenance=Provenance(
                miner=_field(prov, "miner", str, "provenance", default=""),
                sources=tuple(_strs(_field(prov, "sources", list, "provenance", default=[]), "provenance.sources")),
                params=params,
            ),
            verdict=verdict,
        )


def _obj(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise MiningError(f"field '{where}': expected a JSON object, got {type(d).__name__}")
    return d


_MISSING = object()


def _field(obj: Mapping[str, Any], key: str, typ: type, where: str, default: Any = _MISSING, nullable: bool = False) -> Any:
    name = key if where == "pair" else f"{where}.{key}"
    if key not in obj:
        if default is _MISSING:
            raise MiningError(f"field '{name}': missing")
        return default
    value = obj[key]
    if value is None and nullable:
        return None
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise MiningError(f"field '{name}': expected {typ.__name__}{' or null' if nullable else ''}, got {type(value).__name__}")
    return value


def _strs(values: list, where: str) -> list[str]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise MiningError(f"field '{where}[{i}]': expected str, got {type(v).__name__}")
    return values


def _context(d: Any, where: str) -> Context:
    obj = _obj(d, where)
    traj = None
    if obj.get("trajectory") is not None:
        try:
            traj = Trajectory.from_dict(obj["trajectory"])
        except (TrajectoryFormatError, TypeError) as e:
            raise MiningError(f"field '{where}.trajectory': {e}") from None
    return Context(
        text=_field(obj, "text", str, where, default=None, nullable=True),
        image_path=_field(obj, "image_path", str, where, default=None, nullable=True),
        trajectory=traj,
        supported_answer=_field(obj, "supported_answer", str, where, default=None, nullable=True),
    )


def _spans(diff: Mapping[str, Any], side: str) -> tuple[Span, ...]:
    spans = _field(diff, side, list, "difference", default=[])
    out = []
    for i, s in enumerate(spans):
        if not (isinstance(s, list) and s and all(isinstance(v, int) and not isinstance(v, bool) for v in s)):
            raise MiningError(f"field 'difference.{side}[{i}]': expected a list of integers, got {s!r}")
        out.append(tuple(s))
    return tuple(out)


@lru_cache(maxsize=64)
def line_opcodes(positive: str, negative: str) -> tuple[tuple[str, int, int, int, int], ...]:
    """difflib opcodes aligning the lines of two texts (`split_lines`), as a tuple.

    Deliberately not plain `SequenceMatcher(a, b).get_opcodes()`: the common leading and
    trailing lines are matched first and only the middle is aligned by difflib (whose
    longest-match search is quadratic in the differing region). For near-identical contexts
    that is the same alignment at a fraction of the cost; in general it is a valid alignment
    that prefers keeping shared openings and endings together. Cached (the same two texts are
    aligned by `text_difference` and by several verification checks).
    """
    a, b = split_lines(positive), split_lines(negative)
    n, m = len(a), len(b)
    lo = 0
    while lo < n and lo < m and a[lo] == b[lo]:
        lo += 1
    hi = 0
    while hi < n - lo and hi < m - lo and a[n - 1 - hi] == b[m - 1 - hi]:
        hi += 1
    ops: list[tuple[str, int, int, int, int]] = []
    if lo:
        ops.append(("equal", 0, lo, 0, lo))
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a[lo:n - hi], b[lo:m - hi], autojunk=False).get_opcodes():
        if op == "equal" and ops and ops[-1][0] == "equal":
            prev = ops.pop()
            ops.append(("equal", prev[1], i2 + lo, prev[3], j2 + lo))
        else:
            ops.append((op, i1 + lo, i2 + lo, j1 + lo, j2 + lo))
    if hi:
        if ops and ops[-1][0] == "equal":
            prev = ops.pop()
            ops.append(("equal", prev[1], n, prev[3], m))
        else:
            ops.append(("equal", n - hi, n, m - hi, m))
    return tuple(ops)


def text_difference(positive: str, negative: str, include_whitespace_only: bool = False) -> Difference:
    """The line ranges where two texts differ (difflib alignment), as a `Difference`.

    Hunks that differ only in whitespace are left out unless `include_whitespace_only`:
    they are formatting, not evidence, and verification rejects them as shortcut cues.
    """
    a, b = split_lines(positive), split_lines(negative)
    pos, neg = [], []
    for op, i1, i2, j1, j2 in line_opcodes(positive, negative):
        if op == "equal":
            continue
        if not include_whitespace_only and _squash(a[i1:i2]) == _squash(b[j1:j2]):
            continue
        pos.append((i1, i2))
        neg.append((j1, j2))
    return Difference(positive=tuple(pos), negative=tuple(neg))


def _squash(lines: list[str]) -> list[str]:
    return [n for n in (" ".join(line.split()) for line in lines) if n]


def dedupe_pairs(pairs: Iterable[ContrastivePair]) -> Iterator[ContrastivePair]:
    """Yield pairs whose id has not been seen yet (first one wins)."""
    seen: set[str] = set()
    for p in pairs:
        if p.id not in seen:
            seen.add(p.id)
            yield p


def write_pairs(path: str | Path, pairs: Iterable[ContrastivePair], dedupe: bool = True) -> int:
    """Write pairs as JSONL atomically (temp file + rename); returns how many were written.
    Duplicates (same id) are written once unless `dedupe=False`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for p in dedupe_pairs(pairs) if dedupe else pairs:
                fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def read_pairs(path: str | Path) -> Iterator[ContrastivePair]:
    """Yield pairs from a JSONL file (streaming). A malformed line raises MiningError
    naming the file, the line and the field."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MiningError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one pair object") from None
            try:
                yield ContrastivePair.from_dict(obj)
            except MiningError as e:
                raise MiningError(f"{path}:{lineno}: {e}") from None


def pairs_to_dataset(pairs: Iterable[ContrastivePair]) -> "datasets.Dataset":
    """A flat `datasets.Dataset`, one row per pair (nested records as JSON strings)."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "kind": datasets.Value("string"),
            "query": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "positive_text": datasets.Value("string"),
            "negative_text": datasets.Value("string"),
            "positive_image": datasets.Value("string"),
            "negative_image": datasets.Value("string"),
            "difference_positive": datasets.List(datasets.List(datasets.Value("int64"))),
            "difference_negative": datasets.List(datasets.List(datasets.Value("int64"))),
            "miner": datasets.Value("string"),
            "sources": datasets.List(datasets.Value("string")),
            "params": datasets.Value("string"),
            "verified": datasets.Value("bool"),
            "verdict_ok": datasets.Value("bool"),
            "verdict": datasets.Value("string"),
        }
    )
    cols: dict[str, list] = {k: [] for k in features}
    for p in pairs:
        d = p.to_dict()
        row = {
            "id": p.id,
            "kind": p.kind,
            "query": p.query,
            "answer": p.answer,
            "positive_text": p.positive.text,
            "negative_text": p.negative.text,
            "positive_image": p.positive.image_path,
            "negative_image": p.negative.image_path,
            "difference_positive": [list(s) for s in p.difference.positive],
            "difference_negative": [list(s) for s in p.difference.negative],
            "miner": p.provenance.miner,
            "sources": list(p.provenance.sources),
            "params": json.dumps(d["provenance"]["params"], sort_keys=True, ensure_ascii=False),
            "verified": p.verdict is not None,
            "verdict_ok": p.verdict is not None and p.verdict.ok,
            "verdict": json.dumps(d["verdict"], ensure_ascii=False),
        }
        for k, v in row.items():
            cols[k].append(v)
    return datasets.Dataset.from_dict(cols, features=features)
