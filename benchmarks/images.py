"""Images benchmark: near-duplicate search over 200k image embeddings, against all-pairs.

    python -m benchmarks.images [--quick] [--no-edit] [--out DIR]

Data: 200,000 (quick: 20,000) synthetic unit-norm float32 embeddings of dimension 1024,
generated in place (no copy of the matrix), shaped like an image set: 256 topics, each a
direction shared by its images (same-topic cosine ~0.5); images come in look-alike groups
(60% singletons, the rest 2 + geometric sizes) around a group centre, with per-group
isotropic noise, so within-group cosines spread around 0.85 (roughly 0.75-0.95) and about
half the within-group pairs pass alpha = 0.85. `generation_seconds` is reported apart.

Measured in the same run, after a warm-up search on 2,000 rows (imports, thread pools):
- `search_seconds`: `find_pairs(method="ivf", backend="faiss")` over all rows (faiss k-means,
  torch/numpy matrix products for the self-join; 2 threads), with its phase timings;
- `recall_vs_exact`: the fraction of the exact pairs touching a random sample of query rows
  (`exact_pairs_for_rows`, blocked numpy) that the search found;
- `naive_seconds_extrapolated`: the all-pairs loop a user would write (each row against every
  later row, one numpy matrix-vector product per row), timed on a sample of rows and
  extrapolated to n(n-1)/2 pairs; `exact_blocked_seconds_extrapolated`: the blocked exact
  search (matrix-matrix) extrapolated the same way, a stronger baseline;
- `speedup_vs_naive`, `pairs_found`, `peak_rss_mb` (ru_maxrss of this process);
- `easy_vqa_*`: `SimilarityMiner` end to end on easy-VQA (real images, pixel embedder);
- `edit_pairs_per_minute`: from `contextrl.miner.image.edit_miner.edit_pairs_per_minute` when
  importable (null and a note otherwise, or with `--no-edit`).
Gates: search under 60 s, recall >= 0.95, peak RSS under 4 GB. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._util import device_info, emit_json, peak_rss_mb, progress, table

FULL, QUICK, DIM = 200_000, 20_000, 1024
ALPHA = 0.85
RECALL_QUERIES = {False: 1_000, True: 500}
NAIVE_ROWS = {False: 24, True: 48}
GATE_SECONDS, GATE_RECALL, GATE_RSS_MB = 60.0, 0.95, 4096.0
THREADS = 2


def synthetic_embeddings(n: int, d: int = DIM, topics: int = 256, seed: int = 0, topic_weight: float = 0.7,
                         p_single: float = 0.6, show: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) unit-norm float32 rows in look-alike groups (see the module docstring) and the group id per row."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((topics, d), dtype=np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    x = np.empty((n, d), np.float32)
    group = np.empty(n, np.int64)
    s = g0 = 0
    with progress(total=n, desc="generate embeddings", enabled=show) as bar:
        while s < n:
            sizes = np.where(rng.random(4096) < p_single, 1, 1 + rng.geometric(0.45, 4096))
            sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n - s)) + 1]
            member = np.repeat(np.arange(len(sizes)), sizes)[: n - s]
            centre = rng.standard_normal((len(sizes), d), dtype=np.float32)
            centre /= np.linalg.norm(centre, axis=1, keepdims=True)
            centre = topic_weight * t[rng.integers(0, topics, len(sizes))] + np.float32(np.sqrt(1 - topic_weight**2)) * centre
            noise = rng.uniform(0.25, 0.6, len(sizes)).astype(np.float32) / np.float32(np.sqrt(d))
            block = x[s:s + len(member)]
            block[:] = rng.standard_normal((len(member), d), dtype=np.float32)
            block *= noise[member][:, None]
            block += centre[member]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            group[s:s + len(member)] = g0 + member
            g0 += len(sizes)
            s += len(member)
            bar.update(len(member))
    return x, group


def naive_all_pairs(x: np.ndarray, rows: np.ndarray, alpha: float = ALPHA, show: bool = True) -> dict[str, float]:
    """Each sampled row against every later row (one matrix-vector product per row); extrapolated."""
    n = x.shape[0]
    compared = found = 0
    t0 = time.perf_counter()
    for i in progress(rows.tolist(), desc="naive all-pairs (sample)", enabled=show):
        sims = x[i + 1:] @ x[i]
        found += int(np.count_nonzero(sims >= alpha))
        compared += n - 1 - i
    seconds = time.perf_counter() - t0
    per_pair = seconds / max(1, compared)
    return {"rows": len(rows), "pairs_compared": compared, "seconds": seconds, "found": found,
            "extrapolated": per_pair * n * (n - 1) / 2}


def _edit_rate(quick: bool) -> tuple[dict[str, Any] | None, str | None]:
    try:
        from contextrl.miner.image.edit_miner import edit_pairs_per_minute
    except ImportError as e:
        return None, f"edit miner not available: {e}"
    try:
        return edit_pairs_per_minute(quick), None
    except Exception as e:  # report it, keep the search numbers
        traceback.print_exc(file=sys.stderr)
        return None, f"edit_pairs_per_minute failed: {type(e).__name__}: {e}"


def _easy_vqa(quick: bool) -> dict[str, Any]:
    from contextrl.miner.image.data import easy_vqa_items
    from contextrl.miner.image.similarity import SimilarityConfig, SimilarityMiner

    t0 = time.perf_counter()
    pairs, funnel = SimilarityMiner(SimilarityConfig(progress=False)).mine(easy_vqa_items(limit=10_000 if quick else None))
    return {"easy_vqa_seconds": round(time.perf_counter() - t0, 3), "easy_vqa_images": funnel["images"],
            "easy_vqa_neighbour_pairs": funnel["neighbour_pairs"], "easy_vqa_pairs": funnel["verified"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK:,} embeddings instead of {FULL:,}")
    ap.add_argument("--no-edit", action="store_true", help="skip the edit miner's pairs-per-minute")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default="runs/benchmarks", help="where images_search.json goes")
    args = ap.parse_args(argv)
    show = not args.no_progress
    import faiss

    from contextrl.miner.image.search import SearchConfig, exact_pairs_for_rows, find_pairs, recall

    faiss.omp_set_num_threads(THREADS)
    n = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    x, _ = synthetic_embeddings(n, show=show)
    generation_seconds = time.perf_counter() - t0
    config = SearchConfig(alpha=ALPHA, method="ivf", backend="faiss", threads=THREADS, progress=show)
    find_pairs(x[:2000], config)  # warm-up: imports and thread pools stay out of the timing

    t0 = time.perf_counter()
    found = find_pairs(x, config)
    search_seconds = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    queries = np.sort(rng.choice(n, RECALL_QUERIES[args.quick], replace=False))
    t0 = time.perf_counter()
    exact = exact_pairs_for_rows(x, queries, ALPHA)
    exact_sample_seconds = time.perf_counter() - t0
    rec = recall(found.touching(queries), exact)
    exact_blocked = exact_sample_seconds / (len(queries) * n) * n * (n - 1) / 2
    naive = naive_all_pairs(x, np.sort(rng.choice(n, NAIVE_ROWS[args.quick], replace=False)), show=show)

    easy = _easy_vqa(args.quick)
    edit, edit_note = (None, "skipped (--no-edit)") if args.no_edit else _edit_rate(args.quick)
    rss = peak_rss_mb()
    metrics: dict[str, Any] = {
        "benchmark": "images", "quick": args.quick, "images": n, "dim": DIM, "alpha": ALPHA,
        "generation_seconds": round(generation_seconds, 3), "search_seconds": round(search_seconds, 3),
        "search_method": f"{found.method}/{found.backend}", "search_stats": dict(found.stats),
        "pairs_found": len(found), "recall_vs_exact": round(rec, 4), "recall_exact_pairs": len(exact),
        "recall_queries": len(queries), "exact_sample_seconds": round(exact_sample_seconds, 3),
        "exact_blocked_seconds_extrapolated": round(exact_blocked, 1),
        "naive_seconds_extrapolated": round(naive["extrapolated"], 1), "naive_sample_rows": naive["rows"],
        "naive_sample_seconds": round(naive["seconds"], 3),
        "speedup_vs_naive": round(naive["extrapolated"] / search_seconds, 1),
        "speedup_vs_exact_blocked": round(exact_blocked / search_seconds, 1),
        "peak_rss_mb": rss, **easy,
        "edit_pairs_per_minute": None if edit is None else edit.get("edit_pairs_per_minute"),
        "edit": edit, "edit_note": edit_note, "threads": THREADS,
    }
    metrics["gates"] = {"search_under_60s": search_seconds < GATE_SECONDS, "recall_at_least_0.95": rec >= GATE_RECALL,
                        "rss_under_4gb": rss < GATE_RSS_MB}
    metrics["gate_ok"] = all(metrics["gates"].values())
    metrics["device"] = device_info()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images_search.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    print(table([(k, v) for k, v in metrics.items() if not isinstance(v, dict)], title=f"images benchmark ({n:,} x {DIM})"))
    emit_json(metrics)
    return 0 if metrics["gate_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
