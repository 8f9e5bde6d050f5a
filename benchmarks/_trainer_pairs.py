"""Mined pairs for `benchmarks.trainer`: mining with the real miners, the cache, the split.

Pairs come from `ReferencePatchAgent` episodes on BugFix-v0 and HumanEval (plus the example
tasks when BugFix is not fetched) in Docker, branch-mined by `OnlineBranchMiner` (2 workers);
the verified ones are cached as JSONL under `$CONTEXTRL_CACHE/benchmarks/` (with a JSON of the
mining facts beside it) and reused. `split_by_task` keeps every task on one side.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks._util import progress

MINE: dict[str, dict[str, Any]] = {
    "full": {"bugfix": 76, "humaneval": 100, "target": 600, "seconds": 1500.0},
    "quick": {"bugfix": 12, "humaneval": 16, "target": 150, "seconds": 300.0},
}
"""Tasks per source, and when to stop mining (pairs, seconds), per benchmark size."""


def pairs_file(name: str) -> Path:
    """Where mined pairs are cached: `$CONTEXTRL_CACHE/benchmarks/trainer-pairs[-quick].jsonl`."""
    from contextrl.trainer.models import cache_dir

    return cache_dir() / "benchmarks" / f"trainer-pairs{'' if name == 'full' else '-' + name}.jsonl"


def mine_pairs(size: dict[str, Any], show: bool) -> tuple[list, dict[str, Any]]:
    """Scripted-agent episodes in Docker, then branch mining until `target` pairs or `seconds`."""
    import contextrl
    from contextrl.agents import ReferencePatchAgent, run_episode
    from contextrl.envs.sources import load_humaneval, load_tasks
    from contextrl.miner.branch import BranchConfig, OnlineBranchMiner
    from contextrl.miner.buffer import PairBuffer
    from contextrl.sandboxes import SandboxLimits, make_sandbox_factory
    from contextrl.sandboxes.pool import PoolConfig, SandboxPool

    try:
        from contextrl.envs.bugfix import load_bugfix_tasks

        bugfix = list(load_bugfix_tasks())
    except Exception:  # noqa: BLE001 - BugFix sources not fetched: use what ships
        bugfix = []
    step = max(1, len(bugfix) // max(1, size["bugfix"]))
    tasks = bugfix[::step][: size["bugfix"]] + load_humaneval(limit=size["humaneval"])
    examples = Path(__file__).resolve().parent.parent / "examples" / "tasks"
    if not bugfix and examples.is_dir():
        tasks += load_tasks(examples)
    t0 = time.perf_counter()
    env = contextrl.make("contextrl/Task-v0", tasks=tasks, sandbox="docker", pool=PoolConfig(warm=2, max_live=4))
    try:
        trajs = [run_episode(env, ReferencePatchAgent(), t.id, seed=i) for i, t in enumerate(progress(tasks, desc="episodes", enabled=show))]
    finally:
        env.close()
    episode_s = time.perf_counter() - t0
    by_id = {t.id: t for t in tasks}
    usable = [tr for tr in trajs if tr.reward is not None and tr.failure is None]
    buffer = PairBuffer(capacity=100_000, seed=0)
    factory = make_sandbox_factory("docker", limits=SandboxLimits(cpus=1.0, memory_mb=1024))
    pool = SandboxPool(factory, PoolConfig(warm=2, max_live=5), name="bench-trainer")
    t1 = time.perf_counter()
    try:
        with OnlineBranchMiner(BranchConfig(max_forks_per_trajectory=8, max_seconds_per_trajectory=60.0, seed=0), pool,
                               buffer, workers=2, queue_size=len(usable) + 1) as miner:
            random.Random(0).shuffle(usable)  # BugFix and HumanEval interleaved: an early stop keeps both
            for tr in usable:
                miner.submit(tr, by_id[tr.task_id])
            bar = progress(total=size["target"], desc="mined pairs", enabled=show)
            while not miner.wait_idle(timeout=2.0):
                bar.n = min(len(buffer), size["target"])
                bar.refresh()
                if len(buffer) >= size["target"] or time.perf_counter() - t1 > size["seconds"]:
                    break
            bar.close()
            st = miner.stats()
    finally:
        pool.close()
    pairs = [p for p in buffer.snapshot() if p.verdict is not None and p.verdict.ok]
    meta = {"tasks": len(tasks), "bugfix_tasks": min(len(bugfix), size["bugfix"]), "trajectories": len(usable),
            "episode_seconds": round(episode_s, 1), "mining_seconds": round(time.perf_counter() - t1, 1),
            "forks": st.get("attempts"), "pairs": len(pairs), "funnel": st.get("funnel")}
    return pairs, meta


def load_or_mine(name: str, show: bool) -> tuple[list, dict[str, Any]]:
    """Cached mined pairs (the full set serves `--quick` too), else mine them now and cache them."""
    from contextrl.miner.pair import read_pairs, write_pairs

    for cand in ("full", name):
        path = pairs_file(cand)
        if path.exists():
            meta_path = path.with_suffix(".json")
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            return list(read_pairs(path)), {**meta, "cached": True, "file": str(path)}
    pairs, meta = mine_pairs(MINE[name], show)
    path = pairs_file(name)
    write_pairs(path, pairs)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return pairs, {**meta, "cached": False, "file": str(path)}


def synthetic_pairs(n: int) -> list:
    """`n` small trajectory pairs whose contexts differ in one decisive line (for `--tiny`)."""
    from contextrl.miner.pair import Context, ContrastivePair, Provenance, text_difference

    out = []
    for i in range(n):
        pos = f"$ grep -n scale geom.py\n14: if factor < {i}:\n$ pytest -q\n{i + 2} passed\n"
        neg = f"$ grep -n scale geom.py\n14: if factor <= {i}:\n$ pytest -q\n1 failed, {i + 1} passed\n"
        out.append(ContrastivePair(kind="trajectory", query=f"scale(shape, {i}) raises; it should not.",
                                   answer=f"Use `factor < {i}`.", positive=Context(text=pos), negative=Context(text=neg),
                                   difference=text_difference(pos, neg), provenance=Provenance("synthetic", (f"t{i}",))))
    return out


def split_by_task(pairs: list, n_heldout: int, seed: int = 0) -> tuple[list, list]:
    """(train, held-out): whole tasks go to the held-out side until it has `n_heldout` pairs
    (at most half of all pairs); the rest of a task cut by that limit is dropped, not trained on."""
    groups: dict[str, list] = {}
    for p in sorted(pairs, key=lambda p: p.id):
        groups.setdefault(p.provenance.sources[-1] if p.provenance.sources else p.id, []).append(p)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    want = min(n_heldout, len(pairs) // 2)
    held: list = []
    train: list = []
    for k in keys:
        if len(held) < want:
            held.extend(groups[k][: want - len(held)])
        else:
            train.extend(groups[k])
    return train, held
