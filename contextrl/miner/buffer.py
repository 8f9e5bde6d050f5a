"""`PairBuffer`: a bounded, thread-safe store of contrastive pairs for online training.

Miners (e.g. `OnlineBranchMiner`'s workers) `add` pairs from background threads; the
trainer `sample`s a pair batch per optimizer step. The buffer

- deduplicates by pair id (content hash) among the pairs it holds,
- keeps only verified pairs by default (`require_verified`),
- evicts the oldest pairs beyond `capacity`,
- samples without replacement, favouring recent pairs (weights halve every `half_life`
  newer pairs, scaled by `recency_weight`; 0 = uniform) while keeping diversity: within
  one draw at most one pair per group (source trajectory or task) is taken until every
  group present has given one, then a new round starts.

All methods take one lock; sampling is deterministic for a given seed and call sequence.
"""

from __future__ import annotations

import collections
import random
import threading
from typing import Callable, Iterable, Literal

from contextrl.errors import ConfigError
from contextrl.miner.pair import ContrastivePair

GroupBy = Literal["trajectory", "task", "pair"]


def group_of(pair: ContrastivePair, by: GroupBy | Callable[[ContrastivePair], object]) -> object:
    """The diversity group of a pair: its source trajectory (first provenance source), its
    task (the positive context's trajectory's task id), the pair itself, or a callable's key."""
    if callable(by):
        return by(pair)
    if by == "pair":
        return pair.id
    if by == "task":
        traj = pair.positive.trajectory
        if traj is not None:
            return traj.task_id
        srcs = pair.provenance.sources
        return srcs[-1] if srcs else pair.id
    return pair.provenance.sources[0] if pair.provenance.sources else pair.id


class PairBuffer:
    """A bounded FIFO of unique pairs with recency- and diversity-aware sampling."""

    def __init__(self, capacity: int = 4096, seed: int = 0, *, require_verified: bool = True):
        """
        Args:
            capacity: pairs kept at most; the oldest are evicted beyond it (>= 1).
            seed: seeds the sampler.
            require_verified: reject pairs whose verdict is missing or not ok.
        """
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ConfigError(f"PairBuffer.capacity={capacity!r}: use an integer >= 1")
        self.capacity = capacity
        self.require_verified = require_verified
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._pairs: collections.OrderedDict[str, tuple[int, ContrastivePair]] = collections.OrderedDict()
        self._seq = 0
        self.counts = collections.Counter()
        """added, duplicates, unverified, evicted, sampled."""

    def add(self, pairs: Iterable[ContrastivePair] | ContrastivePair) -> int:
        """Add pairs (newest last); returns how many were new. Duplicates and (by default)
        unverified pairs are skipped; the oldest pairs are evicted beyond capacity."""
        if isinstance(pairs, ContrastivePair):
            pairs = [pairs]
        items = list(pairs)
        ids = [p.id for p in items]  # hash outside the lock
        added = 0
        with self._lock:
            for pid, p in zip(ids, items):
                if self.require_verified and (p.verdict is None or not p.verdict.ok):
                    self.counts["unverified"] += 1
                    continue
                if pid in self._pairs:
                    self.counts["duplicates"] += 1
                    continue
                self._seq += 1
                self._pairs[pid] = (self._seq, p)
                added += 1
                while len(self._pairs) > self.capacity:
                    self._pairs.popitem(last=False)
                    self.counts["evicted"] += 1
            self.counts["added"] += added
        return added

    def sample(
        self,
        n: int,
        *,
        recency_weight: float = 1.0,
        half_life: float | None = None,
        group_by: GroupBy | Callable[[ContrastivePair], object] = "trajectory",
        rng: random.Random | None = None,
    ) -> list[ContrastivePair]:
        """Draw up to `n` distinct pairs (fewer when the buffer holds fewer).

        Weight of a pair = 2 ** (-recency_weight * age / half_life), age = how many pairs were
        added after it (the newest has age 0); `half_life` defaults to a quarter of the
        buffer's length. Within a draw, a group (`group_by`) gives a second pair only after
        every group present has given one.
        """
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"PairBuffer.sample: n={n!r} must be an integer >= 0")
        if recency_weight < 0:
            raise ConfigError(f"PairBuffer.sample: recency_weight={recency_weight!r} must be >= 0 (0 = uniform)")
        if half_life is not None and half_life <= 0:
            raise ConfigError(f"PairBuffer.sample: half_life={half_life!r} must be > 0 pairs")
        with self._lock:
            entries = list(self._pairs.values())
            r = rng or self._rng
            if not entries or n == 0:
                return []
            newest = entries[-1][0]
            hl = half_life if half_life is not None else max(1.0, len(entries) / 4)
            pool = [(2.0 ** (-recency_weight * (newest - seq) / hl), p, group_of(p, group_by)) for seq, p in entries]
            out: list[ContrastivePair] = []
            used: set[object] = set()
            while pool and len(out) < n:
                eligible = [i for i, (_, _, g) in enumerate(pool) if g not in used]
                if not eligible:  # every group gave one: next round
                    used.clear()
                    continue
                i = r.choices(eligible, weights=[pool[j][0] for j in eligible])[0]
                _, p, g = pool.pop(i)
                used.add(g)
                out.append(p)
            self.counts["sampled"] += len(out)
            return out

    def snapshot(self) -> list[ContrastivePair]:
        """Every pair held, oldest first (a copy)."""
        with self._lock:
            return [p for _, p in self._pairs.values()]

    def stats(self) -> dict[str, int]:
        """Size, capacity and the counters."""
        with self._lock:
            return {"size": len(self._pairs), "capacity": self.capacity, **{k: int(v) for k, v in self.counts.items()}}

    def clear(self) -> None:
        """Drop every pair (counters are kept)."""
        with self._lock:
            self._pairs.clear()

    def __contains__(self, pair: ContrastivePair | str) -> bool:
        pid = pair if isinstance(pair, str) else pair.id
        with self._lock:
            return pid in self._pairs

    def __len__(self) -> int:
        with self._lock:
            return len(self._pairs)
