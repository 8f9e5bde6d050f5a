"""The approximate method of `search.find_pairs`: an inverted-file self-join.

Rows are clustered by a two-level spherical k-means (`coarse` cells, each split into fine
lists, `nlist` lists in all). Every row joins the `soft` fine lists nearest to it (its first is
its *primary* list), and each list's primary rows are compared, as one matrix product, with
all the rows that joined that list. A pair (x, y) is found when x's primary list is among y's
`soft` nearest or the other way round; its cosine is then exact, so the join never returns a
false pair, it can only miss some (recall is measured in tests and `benchmarks/images.py`).

Deliberately different from faiss's `IndexIVFFlat.range_search`, which answers one query at a
time with SIMD dot products (~3.5 G multiply-adds/s on two cores here, 47 s for 200k x 1024 at
nprobe 4 plus 30 s to train and add): an all-vs-all join batches a whole list into one
matrix product. Those products are small and skinny, where torch's kernels are 3-6x faster
than numpy's OpenBLAS, so torch is used when importable (`_matmul_fn`). Fine lists are looked
up among the fine centroids of a row's coarse cell and its `coarse_probe - 1` nearest cells,
so assignment costs O(n * (coarse + nlist / coarse * coarse_probe)) products, not O(n * nlist).
With `backend="faiss"` the k-means is `faiss.Kmeans`; with "numpy" a small numpy k-means.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from contextrl.miner.image.search import CANDIDATE_SLACK, NeighbourPairs, SearchConfig, _bar, _finish, _topk


def _matmul_fn():
    """`a @ b.T` for float32 arrays: torch's when importable (MKL/oneDNN kernels; several times
    faster than OpenBLAS on the small, skinny products a join makes), numpy's otherwise."""
    try:
        import torch
    except ImportError:
        return lambda a, b: a @ b.T

    def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return torch.matmul(torch.from_numpy(a), torch.from_numpy(b).T).numpy()

    return mm


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def _kmeans(x: np.ndarray, k: int, iters: int, seed: int, backend: str) -> np.ndarray:
    """Spherical k-means centroids (k, d), unit norm."""
    k = max(1, min(k, x.shape[0]))
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=iters, spherical=True, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=max(1, x.shape[0] // k + 1))
        km.train(np.ascontiguousarray(x))
        return _normalise(km.centroids.copy())
    rng = np.random.default_rng(seed)
    cent = x[rng.choice(x.shape[0], k, replace=False)].copy()
    for _ in range(iters):
        assign = np.argmax(x @ cent.T, axis=1)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x)
        empty = np.bincount(assign, minlength=k) == 0
        sums[empty] = x[rng.choice(x.shape[0], int(empty.sum()))]  # re-seed empty clusters
        cent = _normalise(sums)
    return cent


def ivf_join(emb: np.ndarray, config: SearchConfig, backend: str) -> NeighbourPairs:
    """All pairs with cos >= config.alpha that the join finds (see the module docstring)."""
    n, d = emb.shape
    mm = _matmul_fn()
    clock = time.perf_counter
    t0 = clock()
    nlist = config.nlist or max(4, int(round(math.sqrt(2 * n))))
    coarse = max(1, min(config.coarse or int(round(math.sqrt(nlist))), nlist))
    per_cell = max(1, math.ceil(nlist / coarse))
    rng = np.random.default_rng(config.seed)
    sample = emb[np.sort(rng.choice(n, min(n, config.train_rows), replace=False))]
    # level 1, then level 2 inside each coarse cell (trained on the sample rows of that cell)
    c1 = _kmeans(sample, coarse, config.kmeans_iters, config.seed, backend)
    cell_of_sample = np.argmax(sample @ c1.T, axis=1)
    fine, fine_cell = [], []
    for c in range(c1.shape[0]):
        pts = sample[cell_of_sample == c]
        cents = _kmeans(pts, per_cell, config.kmeans_iters, config.seed + 1 + c, backend) if len(pts) else c1[c:c + 1].copy()
        fine.append(cents)
        fine_cell.append(np.full(len(cents), c))
    c2, fine_cell = np.concatenate(fine), np.concatenate(fine_cell)
    del sample
    cell_fines = [np.flatnonzero(fine_cell == c) for c in range(c1.shape[0])]
    probe = _topk(c1 @ c1.T, config.coarse_probe)  # each cell and its nearest cells
    cand_fines = [np.concatenate([cell_fines[c] for c in probe[cc]]) for cc in range(c1.shape[0])]
    t1 = clock()
    # assign every row to its `soft` nearest fine lists
    soft = min(config.soft, c2.shape[0])
    lists = np.empty((n, soft), np.int32)
    cell = np.empty(n, np.int32)
    step = config.block_rows * 4
    for s in range(0, n, step):
        cell[s:s + step] = np.argmax(mm(emb[s:s + step], c1), axis=1)
    by_cell = np.argsort(cell, kind="stable")
    cell_bounds = np.searchsorted(cell[by_cell], np.arange(c1.shape[0] + 1))
    with _bar(n, "ivf assign", config.progress and n > 20_000) as bar:
        for cc in range(c1.shape[0]):
            cf = cand_fines[cc]
            rows_c = by_cell[cell_bounds[cc]:cell_bounds[cc + 1]]
            for s in range(0, len(rows_c), step):
                rows = rows_c[s:s + step]
                lists[rows] = cf[_topk(mm(emb[rows], c2[cf]), soft)] if len(cf) >= soft else np.resize(cf, soft)
                bar.update(len(rows))
    del cell, by_cell
    t2 = clock()
    # join: each list's primary rows against every row that joined it
    prim = lists[:, 0]
    order_p = np.argsort(prim, kind="stable")
    bounds_p = np.searchsorted(prim[order_p], np.arange(c2.shape[0] + 1))
    sec = lists[:, 1:].ravel()
    sec_rows = np.repeat(np.arange(n), soft - 1)
    order_s = np.argsort(sec, kind="stable")
    bounds_s = np.searchsorted(sec[order_s], np.arange(c2.shape[0] + 1))
    sec_rows = sec_rows[order_s]
    del lists, sec, order_s
    thr = config.alpha - CANDIDATE_SLACK
    ii, jj = [], []
    with _bar(n, "ivf join", config.progress and n > 20_000) as bar:
        for lst in range(c2.shape[0]):
            p = order_p[bounds_p[lst]:bounds_p[lst + 1]]
            if len(p) == 0:
                continue
            m = np.concatenate([p, sec_rows[bounds_s[lst]:bounds_s[lst + 1]]])
            xp = emb[p]
            sim = mm(xp, xp if len(m) == len(p) else emb[m])
            a, b = np.nonzero(sim >= thr)
            keep = (b >= len(p)) | (b > a)  # primary x primary: upper triangle only
            ii.append(p[a[keep]])
            jj.append(m[b[keep]])
            bar.update(len(p))
    t3 = clock()
    res = _finish(emb, ii, jj, config.alpha, "ivf", backend)
    sizes = np.diff(bounds_p)
    stats = {"train_seconds": t1 - t0, "assign_seconds": t2 - t1, "join_seconds": t3 - t2, "finish_seconds": clock() - t3,
             "nlist": int(c2.shape[0]), "coarse": int(c1.shape[0]), "soft": soft, "max_list": int(sizes.max()),
             "mean_list": float(sizes.mean()), "candidates": int(sum(len(x) for x in ii)),
             "join_gmac": float((sizes * (sizes + np.diff(bounds_s))).sum()) * d / 1e9}
    return replace(res, stats={k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()})


__all__ = ["ivf_join"]
