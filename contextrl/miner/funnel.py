"""Funnels: how many items survive each stage of a miner, in pipeline order.

Every miner (condition filtering, branching, similarity search, editing) reports one
`Funnel`: an ordered mapping stage name -> count, plus free-form notes (reject reasons,
timings, parameters). It behaves like a `dict[str, int]` (so shard jobs can sum funnels
and code can write `funnel["forks"] += 1`), and adds:

- `units`: what a stage counts ("trajectories", "pairs", ...). Percentages in the table
  are taken against the previous and the first stage *with the same unit*, so a funnel
  that goes from trajectories to pairs stays readable;
- `to_dict()`: the flat stage -> count mapping (what jobs add up across shards);
- `to_record()` / `save(path)`: the whole funnel as JSON (stages, units, notes);
- `table()` / `print()`: a plain-text table.

`StageClock` times the stages (wall and CPU seconds) for a funnel's notes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Iterator, Mapping, TextIO


class Funnel(MutableMapping):
    """Ordered stage -> count, with an optional unit per stage and free-form notes."""

    def __init__(self, name: str = "", stages: Mapping[str, int] | None = None, units: Mapping[str, str] | None = None,
                 notes: Mapping[str, Any] | None = None):
        self.name = name
        """Which miner or run this funnel describes."""
        self._counts: dict[str, int] = {}
        self.units: dict[str, str] = dict(units or {})
        """Stage -> what it counts ("trajectories", "pairs"); stages without one count "items"."""
        self.notes: dict[str, Any] = dict(notes or {})
        """Free-form, JSON-serialisable extras: reject reasons, comparisons, timings."""
        for k, v in (stages or {}).items():
            self[k] = v

    # ------------------------------------------------------------------ mapping protocol

    def __getitem__(self, stage: str) -> int:
        return self._counts[stage]

    def __setitem__(self, stage: str, count: int) -> None:
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"Funnel[{stage!r}]: count must be an int, got {type(count).__name__}")
        self._counts[str(stage)] = count

    def __delitem__(self, stage: str) -> None:
        del self._counts[stage]
        self.units.pop(stage, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        return f"Funnel({self.name!r}, {self._counts!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Funnel):
            return (self.name, self._counts, self.units, self.notes) == (other.name, other._counts, other.units, other.notes)
        return isinstance(other, Mapping) and dict(self._counts) == dict(other)

    # ------------------------------------------------------------------ building

    def add(self, stage: str, count: int, unit: str | None = None) -> "Funnel":
        """Set `stage` to `count` (appended at the end the first time); returns self."""
        self[stage] = count
        if unit is not None:
            self.units[stage] = unit
        return self

    def bump(self, stage: str, n: int = 1, unit: str | None = None) -> int:
        """Add `n` to `stage` (created at 0, at the end, the first time); returns the new count."""
        self.add(stage, self._counts.get(stage, 0) + n, unit)
        return self._counts[stage]

    def note(self, key: str, value: Any) -> "Funnel":
        """Record a note (JSON-serialisable); returns self."""
        self.notes[key] = value
        return self

    def merge(self, other: Mapping[str, int]) -> "Funnel":
        """Add another funnel's counts (e.g. a shard's) into this one; units and notes of a
        `Funnel` are merged too (numeric notes add up, others are overwritten)."""
        for k, v in other.items():
            self.bump(k, int(v), getattr(other, "units", {}).get(k))
        for k, v in getattr(other, "notes", {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(self.notes.get(k), (int, float)):
                self.notes[k] += v
            else:
                self.notes[k] = v
        return self

    # ------------------------------------------------------------------ output

    def to_dict(self) -> dict[str, int]:
        """The flat, ordered stage -> count mapping."""
        return dict(self._counts)

    def to_record(self) -> dict[str, Any]:
        """Everything, JSON-serialisable: {"name", "stages", "units", "notes"}."""
        return {"name": self.name, "stages": self.to_dict(),
                "units": {k: self.units[k] for k in self._counts if k in self.units}, "notes": _jsonable(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Funnel":
        """Inverse of `to_record` (a flat stage -> count mapping is accepted too)."""
        if isinstance(d.get("stages"), Mapping):
            return cls(str(d.get("name", "")), d["stages"], d.get("units") or {}, d.get("notes") or {})
        return cls("", {str(k): int(v) for k, v in d.items()})

    def save(self, path: str | Path) -> Path:
        """Write `to_record()` as JSON, atomically (temp file + rename); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_record(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Funnel":
        """Read a funnel written by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def table(self) -> str:
        """A plain-text table: stage, count, unit, % of the previous and of the first stage of that unit."""
        rows = [("stage", "count", "unit", "% prev", "% first")]
        first: dict[str, int] = {}
        prev: dict[str, int] = {}
        for stage, count in self._counts.items():
            unit = self.units.get(stage, "items")
            p, f = prev.get(unit), first.setdefault(unit, count)
            rows.append((stage, str(count), unit, _pct(count, p), _pct(count, f) if p is not None else ""))
            prev[unit] = count
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        out = [f"funnel: {self.name}"] if self.name else []
        for i, r in enumerate(rows):
            out.append("  ".join(c.ljust(widths[j]) if j in (0, 2) else c.rjust(widths[j]) for j, c in enumerate(r)).rstrip())
            if i == 0:
                out.append("-" * len(out[-1]))
        for k, v in self.notes.items():
            out.append(f"  {k}: {json.dumps(_jsonable(v), ensure_ascii=False)}")
        return "\n".join(out)

    def print(self, file: TextIO | None = None) -> None:
        """Print `table()` (to stdout by default)."""
        print(self.table(), file=file or sys.stdout, flush=True)


class StageClock:
    """Wall and process-CPU seconds per stage: `lap(stage)` closes the stage that just ran.
    CPU time tells a miner's own work from time spent waiting on a busy machine."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        """Stage -> wall seconds, then "total"."""
        self.cpu: dict[str, float] = {}
        """Stage -> CPU seconds of this process (all threads), then "total"."""
        self._t = self._t0 = (time.perf_counter(), time.process_time())

    def lap(self, stage: str) -> float:
        """Record the time since the previous lap under `stage`; returns its wall seconds."""
        now = (time.perf_counter(), time.process_time())
        for d, k in ((self.wall, 0), (self.cpu, 1)):
            d.pop("total", None)
            d[stage] = round(now[k] - self._t[k], 3)
            d["total"] = round(now[k] - self._t0[k], 3)
        self._t = now
        return self.wall[stage]


def _pct(count: int, base: int | None) -> str:
    if base is None:
        return ""
    return "-" if base == 0 else f"{100.0 * count / base:.2f}%"


def _jsonable(o: Any) -> Any:
    if isinstance(o, Mapping):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (str, int, float, bool)) or o is None:
        return o
    return str(o)


__all__ = ["Funnel", "StageClock"]
