"""Offline mining jobs: stream trajectory files through a miner, shard by shard, resumably.

    from contextrl.miner.jobs import run_mining_job, filter_miner
    summary = run_mining_job(["runs/"], "mined/", filter_miner(), workers=8)

1. *Plan*: inputs (any format `contextrl.importers` reads) are streamed once into spill files
   in ``out_dir/.buckets/``: chunks of ``shard_size``, or one file per ``group_key`` value
   (``"repo_commit"``, ``"task"``, a callable) so groups spanning files stay together; buckets
   are packed by key into shards of <= ``shard_size`` (a bigger group stays whole).
   ``plan.json`` records shards, content digests and per-file input failures.
2. *Mine*: each shard not yet done runs in-process, in a process pool or as a Ray task; the
   driver writes ``shards/shard-XXXXX.pairs.jsonl`` (atomic rename), then ``shard-XXXXX.done``
   (digest, miner fingerprint, counts, funnel). A shard that raises gets a ``.failed`` record,
   the job goes on, a rerun retries it; done shards are skipped.
3. *Merge*: ``pairs.jsonl`` (done shards in index order, pairs sorted by id within a shard,
   duplicates dropped), ``funnel.json`` (summed funnels), ``summary.json`` (`JobSummary`).

Memory holds one shard per worker plus a small window of results. A miner factory is a
picklable zero-argument callable (`MinerSpec`) building a `ShardMiner` in the worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from tqdm import tqdm

from contextrl.errors import ContextRLError, MiningError
from contextrl.importers import import_file
from contextrl.importers.detect import detect_format, iter_units, unit_dir_format
from contextrl.miner.pair import ContrastivePair
from contextrl.trajectory import Trajectory, read_trajectories

__all__ = ["GROUP_KEYS", "BranchJobConfig", "JobSummary", "MinerSpec", "OutcomeConfig", "OutcomeContrastMiner", "ShardMiner", "branch_miner",
           "filter_miner", "outcome_miner", "run_mining_job"]
PLAN_VERSION = 1
GroupKey = Callable[[Trajectory], Any]

from contextrl.miner.shard_miners import (  # noqa: E402,F401 - re-exported
    BranchJobConfig, MinerSpec, OutcomeConfig, OutcomeContrastMiner, ShardMiner, branch_miner, filter_miner,
    outcome_miner,
)


# --------------------------------------------------------------------------- plan

GROUP_KEYS: dict[str, GroupKey] = {
    "repo_commit": lambda t: [str(t.metadata.get("repo") or ""), str(t.metadata.get("base_commit") or "")],
    "task": lambda t: [t.task_id],
}


def _atomic_write(path: Path, content: Any) -> None:
    """Write text (or a JSON-able object, as JSON) to a temp file and rename it into place."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _units(inputs: Sequence[str | Path], out_dir: Path, failures: list[list[str]]) -> list[Path]:
    """Importable units (files, conversation dirs) under the inputs, outside `out_dir`."""
    units: list[Path] = []
    for inp in inputs:
        p = Path(inp)
        if not p.exists():
            failures.append([str(p), "no such file or directory"])
        elif p.is_file() or unit_dir_format(p):
            units.append(p)
        else:
            units.extend(u for u in iter_units(p) if out_dir not in u.resolve().parents)
    return units


def _stat(unit: Path) -> list[Any]:
    """[path, bytes, newest mtime] of a unit: what the plan fingerprint sees of it."""
    files = [unit] if unit.is_file() else sorted(f for f in unit.rglob("*") if f.is_file())
    stats = [f.stat() for f in files]
    return [str(unit.resolve()), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]


def _iter_unit(unit: Path) -> Iterator[Trajectory]:
    """Trajectories of one unit; contextrl JSONL is streamed line by line."""
    fmt = detect_format(unit)
    yield from read_trajectories(unit) if fmt == "contextrl" else import_file(unit, fmt)


def _digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def _plan(inputs: Sequence[str | Path], out_dir: Path, shard_size: int, group_key: str | GroupKey | None, progress: bool) -> dict[str, Any]:
    """Partition the inputs into shards on disk (or reuse an up-to-date plan)."""
    bdir = out_dir / ".buckets"
    failures: list[list[str]] = []
    units = _units(inputs, out_dir.resolve(), failures)
    key_fn = GROUP_KEYS[group_key] if isinstance(group_key, str) else group_key
    key_name = group_key if isinstance(group_key, str) or group_key is None else getattr(group_key, "__qualname__", repr(group_key))
    fp = hashlib.sha256(json.dumps([PLAN_VERSION, [_stat(u) for u in units], shard_size, key_name, failures]).encode()).hexdigest()
    try:
        plan = json.loads((bdir / "plan.json").read_text(encoding="utf-8"))
        if plan.get("fingerprint") == fp:
            return plan
    except (OSError, ValueError):
        pass
    shutil.rmtree(bdir, ignore_errors=True)
    bdir.mkdir(parents=True)
    counts: dict[str, list[Any]] = {}  # spill file -> [sort key, count]
    n = 0
    for unit in tqdm(units, desc="reading trajectories", unit="file", disable=not progress):
        got = 0
        try:
            for t in _iter_unit(unit):
                if key_fn is None:
                    name, key = f"chunk-{n // shard_size:06d}.jsonl", ""
                else:
                    key = json.dumps(key_fn(t), default=str)
                    name = "g-" + hashlib.sha1(key.encode()).hexdigest()[:16] + ".jsonl"
                with open(bdir / name, "a", encoding="utf-8") as fh:  # one handle at a time, whatever the key count
                    fh.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
                counts.setdefault(name, [key, 0])[1] += 1
                n, got = n + 1, got + 1
        except (ContextRLError, OSError, ValueError) as e:  # a bad file is reported, the job goes on
            failures.append([str(unit), f"{e}" + (f" (kept the {got} trajectories read before the error)" if got else "")])
    shards, cur, cur_n = [], [], 0
    for name, (key, count) in sorted(counts.items(), key=lambda kv: (kv[1][0], kv[0])):
        if cur and cur_n + count > shard_size:
            shards.append((cur, cur_n))
            cur, cur_n = [], 0
        cur, cur_n = cur + [name], cur_n + count
    if cur:
        shards.append((cur, cur_n))
    plan = {"version": PLAN_VERSION, "fingerprint": fp, "group_key": key_name, "shard_size": shard_size,
            "input_units": len(units), "trajectories": n, "input_failures": failures,
            "shards": [{"index": i, "files": files, "n": c, "digest": _digest(bdir / f for f in files)} for i, (files, c) in enumerate(shards)]}
    _atomic_write(bdir / "plan.json", plan)
    return plan


# --------------------------------------------------------------------------- mine

_MINERS: dict[str, ShardMiner] = {}


def _fingerprint(factory: Callable[[], ShardMiner]) -> str:
    return getattr(factory, "fingerprint", None) or getattr(factory, "name", None) or getattr(factory, "__qualname__", repr(factory))


def _mine_shard(factory: Callable[[], ShardMiner], index: int, source: list[str] | bytes) -> dict[str, Any]:
    """Mine one shard (runs in a worker). `source` is spill-file paths or their bytes (Ray).
    Never raises: an error is returned as ``{"ok": False, "error": ...}``."""
    t0 = time.perf_counter()
    try:
        if isinstance(source, bytes):
            trajs = [Trajectory.from_dict(json.loads(line)) for line in source.decode("utf-8").splitlines() if line.strip()]
        else:
            trajs = [t for p in source for t in read_trajectories(p)]
        key = repr(factory)
        if key not in _MINERS:
            _MINERS[key] = factory()
        pairs, funnel = _MINERS[key].mine_shard(trajs)
        lines: dict[str, str] = {}
        for p in pairs:
            if not isinstance(p, ContrastivePair):
                raise MiningError(f"miner returned {type(p).__name__}, expected ContrastivePair")
            lines.setdefault(p.id, json.dumps(p.to_dict(), ensure_ascii=False))
        return {"index": index, "ok": True, "lines": [lines[k] for k in sorted(lines)], "n_trajectories": len(trajs),
                "funnel": {str(k): int(v) for k, v in dict(funnel).items()}, "seconds": time.perf_counter() - t0}
    except Exception as e:  # a bad shard is recorded, the job goes on
        return {"index": index, "ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}


def _crashed(index: int, e: BaseException) -> dict[str, Any]:
    return {"index": index, "ok": False, "error": f"worker died while mining this shard ({type(e).__name__}: {e})", "seconds": 0.0}


def _local_outcomes(factory, todo, bdir, workers) -> Iterator[dict[str, Any]]:
    """Shard results in-process or from a spawn process pool (a new pool after a worker dies)."""
    if workers <= 1:
        for s in todo:
            yield _mine_shard(factory, s["index"], [str(bdir / f) for f in s["files"]])
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    queue = list(reversed(todo))
    while queue:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            pending: dict[Any, dict[str, Any]] = {}
            broken = False
            while queue or pending:
                while queue and len(pending) < 2 * workers and not broken:
                    s = queue.pop()
                    try:
                        pending[ex.submit(_mine_shard, factory, s["index"], [str(bdir / f) for f in s["files"]])] = s
                    except BrokenProcessPool:
                        queue.append(s)
                        broken = True
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    s = pending.pop(f)
                    try:
                        yield f.result()
                    except BrokenProcessPool as e:
                        broken = True
                        yield _crashed(s["index"], e)
                if broken and not pending:
                    break


def _ray_outcomes(factory, todo, bdir, address) -> Iterator[dict[str, Any]]:
    """Shard results from Ray tasks; shards travel as bytes, so workers need no shared disk."""
    try:
        import ray
    except ImportError as e:
        raise MiningError("--ray needs Ray: pip install 'ray>=2.9'") from e
    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_mine_shard)
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        queue, pending = list(reversed(todo)), {}
        while queue or pending:
            while queue and len(pending) < window:
                s = queue.pop()
                payload = b"".join((bdir / f).read_bytes() for f in s["files"])
                pending[remote.remote(factory, s["index"], payload)] = s
            ready, _ = ray.wait(list(pending), num_returns=1)
            s = pending.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except Exception as e:  # worker crash, node loss
                yield _crashed(s["index"], e)
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- job


@dataclass
class JobSummary:
    """What a mining job did; saved as ``summary.json`` and printed by ``contextrl mine``."""

    out_dir: str
    miner: str
    backend: str
    """"in-process", "processes:N" or "ray:ADDRESS"."""
    miner_fingerprint: str = ""
    """Miner name and config; done shards are reused only by a miner with the same fingerprint."""
    shards_total: int = 0
    shards_done: int = 0
    """Shards mined by this run."""
    shards_skipped: int = 0
    """Shards already done by an earlier run (resume)."""
    shards_failed: int = 0
    oversized_shards: int = 0
    """Shards holding one group larger than shard_size (groups are never split)."""
    input_units: int = 0
    trajectories: int = 0
    pairs: int = 0
    """Pairs in the merged pairs.jsonl (deduplicated)."""
    funnel: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    input_failures: list[list[str]] = field(default_factory=list)
    """[path, error] per input file that could not be read."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """{shard, error} per failed shard."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """Human-readable multi-line summary."""
        lines = [f"mined {self.trajectories} trajectories from {self.input_units} input(s) with {self.miner} ({self.backend}) in {self.seconds:.1f}s",
                 f"shards: {self.shards_total} total, {self.shards_done} mined, {self.shards_skipped} skipped (done earlier), "
                 f"{self.shards_failed} failed" + (f", {self.oversized_shards} oversized" if self.oversized_shards else ""),
                 f"pairs: {self.pairs} -> {Path(self.out_dir) / 'pairs.jsonl'}"]
        if self.funnel:
            lines.append("funnel: " + " -> ".join(f"{k}={v}" for k, v in self.funnel.items()))
        short = lambda m: m if len(m) <= 240 else m[:240] + "... (full text in summary.json)"  # noqa: E731
        lines += [f"  bad input: {short(e if e.startswith(p) else f'{p}: {e}')}" for p, e in self.input_failures]
        lines += [f"  failed shard {f['shard']:05d}: {short(f['error'])}" for f in self.failures]
        return "\n".join(lines)


def _is_done(sdir: Path, shard: Mapping[str, Any], fp: str) -> dict[str, Any] | None:
    """The shard's done marker if it matches the shard's content and the miner, else None."""
    name = f"shard-{shard['index']:05d}"
    try:
        marker = json.loads((sdir / f"{name}.done").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = marker.get("digest") == shard["digest"] and marker.get("miner") == fp and (sdir / f"{name}.pairs.jsonl").exists()
    return marker if ok else None


def _merge(shards: list[dict[str, Any]], sdir: Path, fp: str, dest: Path, funnel: dict[str, int]) -> int:
    """Concatenate done shards' pairs (index order, first occurrence of an id wins) into
    `dest` atomically, adding their funnels into `funnel`; returns the number of pairs."""
    seen: set[str] = set()
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for s in shards:
            marker = _is_done(sdir, s, fp)
            if marker is None:
                continue
            for k, v in marker["funnel"].items():
                funnel[k] = funnel.get(k, 0) + v
            with open(sdir / f"shard-{s['index']:05d}.pairs.jsonl", encoding="utf-8") as pf:
                for line in pf:
                    pid = json.loads(line)["id"]
                    if pid not in seen:
                        seen.add(pid)
                        fh.write(line)
    os.replace(tmp, dest)
    return len(seen)


def run_mining_job(
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    miner_factory: Callable[[], ShardMiner],
    *,
    workers: int = 1,
    ray_address: str | None = None,
    shard_size: int = 1000,
    group_key: str | GroupKey | None = "auto",
    progress: bool = True,
) -> JobSummary:
    """Mine pairs from trajectory files or directories into `out_dir` (see the module docstring).

    `miner_factory`: a picklable zero-argument callable returning a `ShardMiner` (`filter_miner()`,
    `branch_miner()`, `outcome_miner()`). `workers`: process-pool size (1: in-process).
    `ray_address`: run shards as Ray tasks on that cluster, or "local" for a 2-CPU local Ray.
    `group_key`: "auto" (the factory's own), None, "repo_commit", "task", or a callable
    `(Trajectory) -> JSON-able key`. A rerun skips shards already done. Ray workers receive
    shards as bytes (no shared disk needed) but must have contextrl installed.
    """
    t0 = time.perf_counter()
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    for arg, v in (("shard_size", shard_size), ("workers", workers)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise MiningError(f"{arg}={v!r}: use a positive integer")
    if group_key == "auto":
        group_key = getattr(miner_factory, "group_key", None)
    if isinstance(group_key, str) and group_key not in GROUP_KEYS:
        raise MiningError(f"group_key={group_key!r}: use one of {sorted(GROUP_KEYS)}, None, or a callable")
    out, fp = Path(out_dir), _fingerprint(miner_factory)
    sdir = out / "shards"
    sdir.mkdir(parents=True, exist_ok=True)
    for stale in sdir.glob("*.tmp*"):  # left by a killed run
        stale.unlink()
    plan = _plan(list(inputs), out, shard_size, group_key, progress)
    if not plan["shards"] and plan["input_units"] == 0:
        raise MiningError(f"no trajectory files found in {', '.join(map(str, inputs))}" +
                          "".join(f"; {p}: {e}" for p, e in plan["input_failures"]))
    backend = f"ray:{ray_address}" if ray_address else (f"processes:{workers}" if workers > 1 else "in-process")
    summ = JobSummary(str(out), str(getattr(miner_factory, "name", fp)), backend, fp, shards_total=len(plan["shards"]), input_units=plan["input_units"],
                      trajectories=plan["trajectories"], input_failures=plan["input_failures"],
                      oversized_shards=sum(s["n"] > shard_size for s in plan["shards"]))
    todo = [s for s in plan["shards"] if _is_done(sdir, s, fp) is None]
    summ.shards_skipped = len(plan["shards"]) - len(todo)
    by_index = {s["index"]: s for s in plan["shards"]}
    outcomes = _ray_outcomes(miner_factory, todo, out / ".buckets", ray_address) if ray_address else \
        _local_outcomes(miner_factory, todo, out / ".buckets", workers)
    bar = tqdm(total=len(plan["shards"]), initial=summ.shards_skipped, desc=f"mining ({summ.miner})", unit="shard", disable=not progress)
    try:
        for res in outcomes:
            name = f"shard-{res['index']:05d}"
            if res["ok"]:
                _atomic_write(sdir / f"{name}.pairs.jsonl", "".join(line + "\n" for line in res["lines"]))
                _atomic_write(sdir / f"{name}.done", {"shard": res["index"], "digest": by_index[res["index"]]["digest"], "miner": fp,
                                                   "n_trajectories": res["n_trajectories"], "n_pairs": len(res["lines"]),
                                                   "funnel": res["funnel"], "seconds": round(res["seconds"], 3)})
                (sdir / f"{name}.failed").unlink(missing_ok=True)
                summ.shards_done += 1
            else:
                _atomic_write(sdir / f"{name}.failed", {"shard": res["index"], "error": res["error"], "traceback": res.get("traceback", "")})
                summ.shards_failed += 1
                summ.failures.append({"shard": res["index"], "error": res["error"]})
            bar.update(1)
    finally:
        bar.close()
    summ.pairs = _merge(plan["shards"], sdir, fp, out / "pairs.jsonl", summ.funnel)
    summ.seconds = round(time.perf_counter() - t0, 3)
    _atomic_write(out / "funnel.json", summ.funnel)
    _atomic_write(out / "summary.json", summ.to_dict())
    return summ
