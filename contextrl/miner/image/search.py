"""Near-duplicate search: every pair (i, j), i < j, of unit-norm rows with cos >= alpha.

`find_pairs(emb, SearchConfig(...))` returns `NeighbourPairs` (three parallel arrays i, j,
cos; no dicts). Two methods:

- `exact`: all pairs, blocked over rows *and* columns so memory stays bounded
  (`block_rows` x `block_cols` floats at a time). Backend `faiss` runs `IndexFlatIP.range_search`
  per row block; backend `numpy` runs matrix products over the upper triangle only. Both
  collect candidates at `alpha - 1e-4` and then recompute every candidate's cosine the
  same way (one float32 row-dot routine) before the final `>= alpha` cut, so the two
  backends return the *same* pairs, not merely close sets.
- `ivf`: an inverted-file **self-join**, approximate (`contextrl.miner.image.ivf`, which says
  why it is not faiss's `IndexIVFFlat.range_search`). It only ever returns true pairs (every
  cosine is exact); what it can miss is measured, not assumed: `recall(approx, exact)` with
  `exact_pairs_for_rows` on a sample of rows.

`top_k` gives each row's k nearest rows (exact), for inspection and small sets.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields, replace
from typing import Iterator, Literal, Mapping

import numpy as np

from contextrl.errors import ConfigError

Backend = Literal["auto", "faiss", "numpy"]
Method = Literal["auto", "exact", "ivf"]
BACKENDS: tuple[str, ...] = ("auto", "faiss", "numpy")
METHODS: tuple[str, ...] = ("auto", "exact", "ivf")
CANDIDATE_SLACK = 1e-4
"""Candidates are collected at alpha - this, then every cosine is recomputed the same way."""


def faiss_available() -> bool:
    """Is the `faiss` module importable (package `faiss-cpu`)?"""
    return importlib.util.find_spec("faiss") is not None


@dataclass(frozen=True)
class SearchConfig:
    """How `find_pairs` searches (validated at construction)."""

    alpha: float = 0.85
    """Keep pairs with cosine >= alpha; in (-1, 1]."""
    backend: Backend = "auto"
    """"faiss", "numpy", or "auto" (faiss when installed)."""
    method: Method = "auto"
    """"exact", "ivf" (approximate self-join), or "auto": exact below `ivf_min_rows` rows."""
    ivf_min_rows: int = 50_000
    """With method="auto", use the IVF join from this many rows on."""
    nlist: int | None = None
    """IVF: fine lists in all (None: about sqrt(2 n), at least 4)."""
    coarse: int | None = None
    """IVF: first-level cells (None: about sqrt(nlist))."""
    soft: int = 2
    """IVF: how many nearest fine lists each row joins (>= 1; more: higher recall, slower)."""
    coarse_probe: int = 3
    """IVF: fine lists are looked up in this many coarse cells nearest a row's own (>= 1)."""
    train_rows: int = 32_768
    """IVF: k-means is trained on at most this many rows sampled at random."""
    kmeans_iters: int = 6
    """IVF: k-means iterations per level."""
    block_rows: int = 2048
    """Rows per block (exact search and assignment); bounds memory with `block_cols`."""
    block_cols: int = 16_384
    """Columns per block in exact search."""
    threads: int | None = None
    """faiss OpenMP threads (None: leave faiss's setting alone)."""
    seed: int = 0
    """Seed for the k-means samples."""
    progress: bool = True
    """Show a progress bar for long searches."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"SearchConfig.{name}={getattr(self, name)!r}: {fix}")

        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not -1.0 < self.alpha <= 1.0:
            raise bad("alpha", "use a cosine threshold in (-1, 1], e.g. 0.85")
        if self.backend not in BACKENDS:
            raise bad("backend", f"choose one of {list(BACKENDS)}")
        if self.method not in METHODS:
            raise bad("method", f"choose one of {list(METHODS)}")
        for name, low in (("ivf_min_rows", 1), ("soft", 1), ("coarse_probe", 1), ("train_rows", 16), ("kmeans_iters", 1),
                          ("block_rows", 1), ("block_cols", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise bad(name, f"use an integer >= {low}")
        for name in ("nlist", "coarse", "threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise bad(name, "use a positive integer, or null for the default")
        if self.backend == "faiss" and not faiss_available():
            raise bad("backend", "faiss is not installed: `pip install faiss-cpu` (or `contextrl[images]`), "
                                 "or use backend='numpy' / 'auto'")

    def resolved_backend(self) -> str:
        """"faiss" or "numpy"."""
        return ("faiss" if faiss_available() else "numpy") if self.backend == "auto" else self.backend

    def resolved_method(self, n: int) -> str:
        """"exact" or "ivf" for n rows."""
        return ("ivf" if n >= self.ivf_min_rows else "exact") if self.method == "auto" else self.method

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class NeighbourPairs:
    """Pairs (i[k], j[k]) with i < j and their cosines, sorted by (i, j)."""

    i: np.ndarray
    """Row index of the first element (int64)."""
    j: np.ndarray
    """Row index of the second element (int64), always > i."""
    cos: np.ndarray
    """Cosine of the pair (float32), >= alpha."""
    n: int
    """Number of rows searched."""
    alpha: float
    method: str = "exact"
    backend: str = "numpy"
    stats: Mapping[str, float] = field(default_factory=dict)
    """Phase timings (seconds) and sizes of the search (IVF), for reports."""

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def __iter__(self) -> Iterator[tuple[int, int, float]]:
        for a, b, c in zip(self.i.tolist(), self.j.tolist(), self.cos.tolist()):
            yield a, b, c

    def keys(self) -> np.ndarray:
        """One int64 per pair (i * n + j), sorted: for set operations between results."""
        return self.i * np.int64(self.n) + self.j

    def by_cos(self) -> "NeighbourPairs":
        """The same pairs, highest cosine first (ties by (i, j))."""
        order = np.lexsort((self.j, self.i, -self.cos))
        return replace(self, i=self.i[order], j=self.j[order], cos=self.cos[order])

    def touching(self, rows: np.ndarray) -> "NeighbourPairs":
        """The pairs with at least one end in `rows`."""
        mask = np.isin(self.i, rows) | np.isin(self.j, rows)
        return replace(self, i=self.i[mask], j=self.j[mask], cos=self.cos[mask])


def recall(found: NeighbourPairs, exact: NeighbourPairs) -> float:
    """Fraction of `exact`'s pairs that `found` has (1.0 when `exact` is empty)."""
    if len(exact) == 0:
        return 1.0
    return float(np.isin(exact.keys(), found.keys()).mean())


# --------------------------------------------------------------------------- helpers


def _check_matrix(emb: np.ndarray) -> np.ndarray:
    if not isinstance(emb, np.ndarray) or emb.ndim != 2:
        raise ConfigError(f"embeddings: expected a 2-D numpy array (n, d), got {type(emb).__name__} "
                          f"{getattr(emb, 'shape', '')}")
    if emb.dtype != np.float32:
        raise ConfigError(f"embeddings: dtype {emb.dtype} - pass float32 rows (emb.astype(np.float32)); "
                          "a silent copy of a large matrix would double its memory")
    return np.ascontiguousarray(emb)


def _finish(emb: np.ndarray, ii: list[np.ndarray], jj: list[np.ndarray], alpha: float, method: str,
            backend: str) -> NeighbourPairs:
    """Dedupe candidates, recompute cosines with one routine, cut at alpha, sort."""
    n = emb.shape[0]
    i = np.concatenate(ii).astype(np.int64) if ii else np.zeros(0, np.int64)
    j = np.concatenate(jj).astype(np.int64) if jj else np.zeros(0, np.int64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    keep = lo != hi
    keys = np.unique(lo[keep] * np.int64(n) + hi[keep])
    i, j = keys // n, keys % n
    cos = np.empty(len(keys), np.float32)
    for s in range(0, len(keys), 16_384):  # bounded gathers; one routine for every backend
        cos[s:s + 16_384] = np.einsum("ij,ij->i", emb[i[s:s + 16_384]], emb[j[s:s + 16_384]])
    ok = cos >= alpha
    return NeighbourPairs(i=i[ok], j=j[ok], cos=cos[ok], n=n, alpha=float(alpha), method=method,
                          backend=backend)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _set_threads(config: SearchConfig, backend: str) -> None:
    if backend == "faiss" and config.threads is not None:
        import faiss

        faiss.omp_set_num_threads(config.threads)


# --------------------------------------------------------------------------- exact


def _exact_numpy(emb: np.ndarray, config: SearchConfig) -> NeighbourPairs:
    n, thr = emb.shape[0], config.alpha - CANDIDATE_SLACK
    ii, jj = [], []
    br, bc = config.block_rows, config.block_cols
    with _bar(n, "exact search (numpy)", config.progress and n > 20_000) as bar:
        for s in range(0, n, br):
            e = min(n, s + br)
            for c in range(s, n, bc):  # upper triangle only: columns from the block's first row
                sim = emb[s:e] @ emb[c:min(n, c + bc)].T
                a, b = np.nonzero(sim >= thr)
                a, b = a + s, b + c
                keep = b > a
                ii.append(a[keep])
                jj.append(b[keep])
            bar.update(e - s)
    return _finish(emb, ii, jj, config.alpha, "exact", "numpy")


def _exact_faiss(emb: np.ndarray, config: SearchConfig) -> NeighbourPairs:
    import faiss

    n, d, thr = emb.shape[0], emb.shape[1], config.alpha - CANDIDATE_SLACK
    ii, jj = [], []
    steps = sum(-(-min(n, c + config.block_cols) // config.block_rows) for c in range(0, n, config.block_cols))
    with _bar(steps, "exact search (faiss)", config.progress and n > 20_000) as bar:
        for c in range(0, n, config.block_cols):
            index = faiss.IndexFlatIP(d)
            index.add(emb[c:min(n, c + config.block_cols)])
            for s in range(0, min(n, c + config.block_cols), config.block_rows):  # rows that can pair with this column block
                e = min(n, s + config.block_rows)
                lims, _, labels = index.range_search(emb[s:e], thr)
                a = np.repeat(np.arange(s, e, dtype=np.int64), np.diff(lims).astype(np.int64))
                b = labels.astype(np.int64) + c
                keep = b > a
                ii.append(a[keep])
                jj.append(b[keep])
                bar.update(1)
    return _finish(emb, ii, jj, config.alpha, "exact", "faiss")


def exact_pairs_for_rows(emb: np.ndarray, rows: np.ndarray, alpha: float = 0.85, block_rows: int = 512) -> NeighbourPairs:
    """Exact ground truth for a sample: every pair (any row, other row) with cos >= alpha
    where at least one end is in `rows` (numpy, blocked). For measuring an approximate
    search's recall against exact on a sample of queries."""
    emb = _check_matrix(emb)
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    ii, jj = [], []
    for s in range(0, len(rows), block_rows):
        q = rows[s:s + block_rows]
        sim = emb[q] @ emb.T
        a, b = np.nonzero(sim >= alpha - CANDIDATE_SLACK)
        ii.append(q[a])
        jj.append(b.astype(np.int64))
    return _finish(emb, ii, jj, alpha, "exact", "numpy")


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


# --------------------------------------------------------------------------- entry points


def find_pairs(emb: np.ndarray, config: SearchConfig | None = None, **overrides) -> NeighbourPairs:
    """All pairs (i < j) of rows of `emb` (float32, unit-norm rows) with cos >= alpha.

    `overrides` replace config fields, e.g. `find_pairs(x, alpha=0.9, backend="numpy")`."""
    config = config or SearchConfig()
    if overrides:
        unknown = [k for k in overrides if k not in SearchConfig.field_names()]
        if unknown:
            raise ConfigError(f"find_pairs: unknown SearchConfig field {unknown[0]!r}; fields are {SearchConfig.field_names()}")
        config = replace(config, **overrides)
    emb = _check_matrix(emb)
    backend, method = config.resolved_backend(), config.resolved_method(emb.shape[0])
    _set_threads(config, backend)
    if emb.shape[0] < 2:
        return _finish(emb, [], [], config.alpha, method, backend)
    if method == "ivf":
        from contextrl.miner.image.ivf import ivf_join

        return ivf_join(emb, config, backend)
    return _exact_faiss(emb, config) if backend == "faiss" else _exact_numpy(emb, config)


def top_k(emb: np.ndarray, k: int, queries: np.ndarray | None = None, backend: Backend = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `emb` (by cosine) for each query row (default: every row,
    itself excluded). Returns (cos, index) arrays of shape (q, k), best first."""
    emb = _check_matrix(emb)
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"top_k: k={k!r}: use a positive integer")
    cfg = SearchConfig(backend=backend)
    self_query = queries is None
    q = emb if self_query else _check_matrix(queries)
    kk = min(k + self_query, emb.shape[0])
    if cfg.resolved_backend() == "faiss":
        import faiss

        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        cos, idx = index.search(q, kk)
    else:
        cos, idx = [], []
        for s in range(0, q.shape[0], 2048):
            sim = q[s:s + 2048] @ emb.T
            top = _topk(sim, kk)
            idx.append(top)
            cos.append(np.take_along_axis(sim, top, axis=1))
        cos, idx = np.concatenate(cos), np.concatenate(idx)
    if self_query:  # drop each row itself (wherever ties put it)
        own = idx == np.arange(q.shape[0])[:, None]
        drop = np.where(own.any(axis=1), np.argmax(own, axis=1), kk - 1)
        keep = np.ones_like(idx, dtype=bool)
        keep[np.arange(q.shape[0]), drop] = False
        idx = idx[keep].reshape(q.shape[0], kk - 1)[:, :k]
        cos = cos[keep].reshape(q.shape[0], kk - 1)[:, :k]
    return cos.astype(np.float32), idx.astype(np.int64)


__all__ = ["BACKENDS", "METHODS", "Backend", "Method", "NeighbourPairs", "SearchConfig", "exact_pairs_for_rows",
           "faiss_available", "find_pairs", "recall", "top_k"]
