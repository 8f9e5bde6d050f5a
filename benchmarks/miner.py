"""Miner benchmark: the condition-filtering cascade over a 66k-trajectory pool, against all-pairs.

    python -m benchmarks.miner [--quick] [--no-branch] [--out DIR]

Pool: `benchmarks.synthetic_pool.SyntheticPool`, shaped like the paper's 66k trajectories
(long-tailed repos/commits/files/functions, several rollouts per issue, 20-60 steps with
short observations, one- or two-hunk git diffs); generated lazily and deterministically
(a `Sequence`: trajectory i is built when asked for), so the pool is never all in memory.

Measured in the same run:
- `filter_seconds`: `ConditionFilterMiner.mine` over the whole pool, minus the time the pool
  spent building trajectories (`generation_seconds`; `filter_wall_seconds` includes it);
  the embedder is loaded before the clock starts (`embedder_load_seconds`);
  `filter_cpu_seconds` is the process CPU time of the same work (all threads), which other
  processes on a shared machine do not inflate: on an idle machine the wall time is at most that;
- `naive_seconds_extrapolated`: all-pairs on a random sample of the keyed pool with the same
  per-pair work (same repo+commit, a shared file+target, distinct issues, cosine in the
  band with statements embedded on first use by the same embedder, that one-off cost
  left out), extrapolated to n(n-1)/2 pairs, plus the cascade's own keying, embedding,
  masking and verification time (the same work, done once);
- `speedup_vs_naive`, `peak_rss_mb`, `pairs_kept`, `kept_fraction`, the funnel;
- `branch_pairs_per_minute`, `branch_yield`: from `benchmarks.miner_branch.branch_benchmark`
  when that module exists (null otherwise, or with `--no-branch`).
Gates: full pool in under 60 s and peak RSS under 4 GB (`gate_ok`: wall time; `gate_ok_cpu`: CPU time). The funnel is printed and saved
to DIR/miner_funnel.json (default runs/benchmarks). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks._util import device_info, emit_json, peak_rss_mb, progress, table
from benchmarks.synthetic_pool import SyntheticPool

FULL, QUICK = 66_000, 6_000
NAIVE_SAMPLE = {False: 3_000, True: 1_000}
GATE_SECONDS, GATE_RSS_MB = 60.0, 4096.0


def naive_all_pairs(pool: SyntheticPool, miner: Any, sample: int, seed: int = 0, show: bool = True) -> dict[str, float]:
    """All-pairs over a random sample with the cascade's per-pair conditions; seconds per pair."""
    from collections import Counter

    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(pool)), min(sample, len(pool))))
    sids: dict[str, int] = {}
    entries = [e for e in (miner._key(pool[i], i, sids, Counter()) for i in idx) if e is not None]
    statements = list(sids)
    leaves = [frozenset(e.leaves) for e in entries]
    lo, hi = miner.band()
    vec: dict[int, Any] = {}
    embed_seconds = 0.0

    def embedded(sid: int):
        nonlocal embed_seconds
        if sid not in vec:  # a one-off cost per statement, not per pair: timed apart, not extrapolated
            t = time.perf_counter()
            vec[sid] = miner.embedder.embed([statements[sid]])[0]
            embed_seconds += time.perf_counter() - t
        return vec[sid]

    matches = 0
    t0 = time.perf_counter()
    for a in progress(range(len(entries)), desc="naive all-pairs", enabled=show):
        ea, la = entries[a], leaves[a]
        for b in range(a + 1, len(entries)):
            eb = entries[b]
            if ea.rc != eb.rc or la.isdisjoint(leaves[b]) or ea.sid == eb.sid or ea.task == eb.task:
                continue
            matches += lo <= float(embedded(ea.sid) @ embedded(eb.sid)) < hi
    seconds = time.perf_counter() - t0 - embed_seconds
    pairs = len(idx) * (len(idx) - 1) // 2  # every sampled trajectory is compared, keyed or not
    return {"sample": len(idx), "sample_pairs": pairs, "sample_seconds": seconds, "sample_embed_seconds": embed_seconds,
            "sample_matches": matches, "seconds_per_pair": seconds / max(1, pairs)}


def _branch_metrics(quick: bool, enabled: bool = True) -> dict[str, Any]:
    """The live branching part, when `benchmarks.miner_branch` is importable (nulls otherwise)."""
    out: dict[str, Any] = {"branch_pairs_per_minute": None, "branch_yield": None}
    if not enabled:
        out["branch_status"] = "skipped (--no-branch)"
        return out
    try:
        from benchmarks.miner_branch import branch_benchmark
    except ImportError as e:
        out["branch_status"] = f"absent ({e})"
        return out
    try:
        res = dict(branch_benchmark(quick))
    except Exception as e:  # noqa: BLE001 - the filter metrics must still come out
        traceback.print_exc(file=sys.stderr)
        out["branch_status"] = f"failed: {type(e).__name__}: {e}"
        return out
    out.update({k: res.get(k) for k in ("branch_pairs_per_minute", "branch_yield")})
    out["branch_status"] = "ok"
    out["branch"] = res
    return out


def run(quick: bool, pool_size: int | None = None, seed: int = 0, show: bool = True, branch: bool = True,
        out_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the metrics (see the module docstring)."""
    from contextrl.miner.filter import ConditionFilterMiner, FilterConfig

    n = pool_size or (QUICK if quick else FULL)
    pool = SyntheticPool(n, seed=seed)
    miner = ConditionFilterMiner(FilterConfig(seed=seed))
    t0 = time.perf_counter()
    miner.embedder.embed(["warm-up"])  # loading the model is a once-per-process cost, reported apart
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = miner.mine(pool, progress=show)
    wall = time.perf_counter() - t0
    filter_seconds = wall - pool.generate_seconds  # the cascade itself; building the synthetic pool is not part of it
    f = res.funnel
    st = f.notes["seconds"]
    cpu = f.notes["cpu_seconds"]["total"] - pool.generate_cpu_seconds
    naive = naive_all_pairs(pool, miner, NAIVE_SAMPLE[quick], seed=seed, show=show)
    # Same pipeline but all-pairs instead of indexed grouping: keying, every pair's checks,
    # the same statements embedded once, then the same masking and verification.
    same = st["keying"] - pool.generate_seconds + st["similarity"] + st["fetch"] + st["masking"] + st["verification"]
    naive_seconds = same + naive["seconds_per_pair"] * n * (n - 1) / 2
    funnel_path = (out_dir or Path("runs/benchmarks")) / "miner_funnel.json"
    f.note("pool", {"size": n, "seed": seed, "issues": pool.n_issues, "repos": pool.n_repos})
    f.save(funnel_path)
    rss = peak_rss_mb()
    metrics: dict[str, Any] = {
        "pool_size": n,
        "filter_seconds": round(filter_seconds, 3),
        "filter_wall_seconds": round(wall, 3),
        "filter_cpu_seconds": round(cpu, 3),
        "generation_seconds": round(pool.generate_seconds, 3),
        "embedder_load_seconds": round(load_seconds, 3),
        "naive_seconds_extrapolated": round(naive_seconds, 1),
        "speedup_vs_naive": round(naive_seconds / filter_seconds, 1),
        "peak_rss_mb": rss,
        "pairs_kept": len(res.pairs),
        "trajectories_kept": f["trajectories kept"],
        "kept_fraction": round(f["trajectories kept"] / n, 4),
        "embedder": f.notes["embedder"],
        "embedded": f.notes["embedded"],
        "comparisons": f.notes["comparisons"],
        "all_pairs": f.notes["all_pairs"],
        "stage_seconds": st,
        "stage_cpu_seconds": f.notes["cpu_seconds"],
        "naive": {k: round(v, 9) if isinstance(v, float) else v for k, v in naive.items()},
        "funnel": f.to_dict(),
        "funnel_notes": {k: f.notes[k] for k in ("dropped", "masking_rejects", "verify_rejects", "groups")},
        "funnel_path": str(funnel_path),
        "gates": {"seconds": GATE_SECONDS, "rss_mb": GATE_RSS_MB, "applies": n >= FULL},
        "gate_ok": filter_seconds < GATE_SECONDS and rss < GATE_RSS_MB,
        "gate_ok_cpu": cpu < GATE_SECONDS and rss < GATE_RSS_MB,
        "quick": quick,
    }
    metrics.update(_branch_metrics(quick, branch))
    metrics["device"] = device_info({"loadavg": [round(x, 2) for x in os.getloadavg()]})
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.miner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"a {QUICK}-trajectory pool (under a minute)")
    ap.add_argument("--pool", type=int, default=None, help="pool size (overrides --quick's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-branch", action="store_true", help="skip the live branching part")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="where miner_funnel.json goes (default runs/benchmarks)")
    args = ap.parse_args(argv)
    m = run(args.quick, args.pool, args.seed, show=not args.no_progress, branch=not args.no_branch, out_dir=args.out)
    from contextrl.miner.funnel import Funnel

    Funnel.load(m["funnel_path"]).print()
    print(table([(k, m[k]) for k in ("pool_size", "filter_seconds", "filter_cpu_seconds", "generation_seconds",
                                     "naive_seconds_extrapolated",
                                     "speedup_vs_naive", "peak_rss_mb", "pairs_kept", "kept_fraction", "embedded",
                                     "comparisons", "branch_pairs_per_minute", "gate_ok", "gate_ok_cpu")],
                title="miner benchmark"),
          flush=True)
    emit_json(m)
    return 0 if m["gate_ok"] or m["gate_ok_cpu"] or not m["gates"]["applies"] else 1


if __name__ == "__main__":
    sys.exit(main())
