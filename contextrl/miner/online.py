"""`OnlineBranchMiner`: branch mining beside training, feeding a `PairBuffer` without blocking.

Split from `branch.py`: the miner there does one trajectory at a time; this module owns the
queue, the worker threads and their sandboxes.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from contextrl.envs.task import Task
from contextrl.errors import ConfigError, MiningError
from contextrl.miner.branch import BranchConfig, BranchMiner, SandboxSource, new_funnel  # noqa: F401
from contextrl.miner.buffer import PairBuffer
from contextrl.sandboxes.pool import SandboxPool
from contextrl.trajectory import Trajectory


class OnlineBranchMiner:
    """Branch mining beside training: `submit` never blocks; worker threads mine and feed a buffer.

    `submit(traj, task)` appends to a bounded queue (when full, the oldest entry is dropped
    and counted); `workers` threads, each with its own `BranchMiner` and so its own sandbox,
    mine queued trajectories and `add` the verified pairs to `buffer`. A worker's exception
    is recorded (`stats()["recent_errors"]`) and the worker goes on. `close()` stops the
    workers (finishing the trajectories in flight; `drain=True` also mines what is queued),
    joins them and gives every sandbox back. Use as a context manager.
    """

    def __init__(self, config: BranchConfig | None = None, sandbox_source: SandboxSource | None = None,
                 buffer: "PairBuffer | None" = None, *, workers: int = 2, queue_size: int = 64, name: str = "branch"):
        """
        Args:
            config: the miner's budgets and filters.
            sandbox_source: a `SandboxPool` (shared, not closed here) or a factory (a pool of
                `workers` warm sandboxes is made from it and closed by `close()`); default: auto.
            buffer: where pairs go (default: a new `PairBuffer()`).
            workers: mining threads (>= 1); each holds one sandbox.
            queue_size: trajectories waiting at most (>= 1).
        """
        from contextrl.miner.buffer import PairBuffer
        from contextrl.sandboxes import make_sandbox_factory
        from contextrl.sandboxes.pool import PoolConfig

        for arg, val in (("workers", workers), ("queue_size", queue_size)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"OnlineBranchMiner.{arg}={val!r}: use an integer >= 1")
        self.config = config or BranchConfig()
        self.buffer = buffer if buffer is not None else PairBuffer()
        self.queue_size = queue_size
        self._own_pool = not isinstance(sandbox_source, SandboxPool)
        if isinstance(sandbox_source, SandboxPool):
            self.pool = sandbox_source
        else:
            factory = sandbox_source if sandbox_source is not None else make_sandbox_factory("auto")
            self.pool = SandboxPool(factory, PoolConfig(warm=workers, max_live=2 * workers + 1), name=f"{name}-pool")
        self._queue: collections.deque[tuple[Trajectory, Task]] = collections.deque()
        self._cv = threading.Condition()
        self._counts: collections.Counter[str] = collections.Counter()
        self._funnel = new_funnel()
        self._errors: collections.deque[str] = collections.deque(maxlen=20)
        self._seconds = 0.0
        self._timings: dict[str, float] = {}
        self._in_flight = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(BranchMiner(self.config, self.pool),),
                                          name=f"{name}-worker-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, traj: Trajectory, task: Task) -> bool:
        """Queue a finished trajectory; returns False when the oldest queued one had to be dropped."""
        with self._cv:
            if self._closed:
                raise MiningError("OnlineBranchMiner is closed; make a new one")
            dropped = len(self._queue) >= self.queue_size
            if dropped:
                self._queue.popleft()
                self._counts["dropped"] += 1
            self._queue.append((traj, task))
            self._counts["submitted"] += 1
            self._cv.notify()
        return not dropped

    def _work(self, miner: BranchMiner) -> None:
        try:
            while True:
                with self._cv:
                    while not self._queue and not self._closed:
                        self._cv.wait()
                    if not self._queue:
                        return
                    traj, task = self._queue.popleft()
                    self._in_flight += 1
                try:
                    res = miner.mine(traj, task)
                    added = self.buffer.add(res.pairs)
                    with self._cv:
                        self._counts.update(mined=1, attempts=res.attempts, pairs=len(res.pairs), pairs_added=added)
                        self._seconds += res.seconds
                        self._funnel.merge(res.funnel)
                        for k, v in res.timings.items():
                            self._timings[k] = self._timings.get(k, 0.0) + v
                except Exception as e:  # noqa: BLE001 - recorded; a bad trajectory never stops the worker
                    with self._cv:
                        self._counts["failed"] += 1
                        self._errors.append(f"{task.id}: {type(e).__name__}: {e}")
                finally:
                    with self._cv:
                        self._in_flight -= 1
                        self._cv.notify_all()
        finally:
            miner.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and no trajectory is in flight; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._queue or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(timeout=left)
        return True

    def stats(self) -> dict[str, Any]:
        """Counters (submitted, dropped, discarded, mined, failed, attempts, pairs, pairs_added), queue
        length, trajectories in flight, mining seconds (summed over workers) and per-phase timings,
        the summed funnel, recent errors, buffer stats."""
        with self._cv:
            out: dict[str, Any] = {k: int(self._counts.get(k, 0)) for k in
                                   ("submitted", "dropped", "discarded", "mined", "failed", "attempts", "pairs", "pairs_added")}
            out.update(queued=len(self._queue), in_flight=self._in_flight, seconds=round(self._seconds, 3),
                       timings={k: round(v, 3) for k, v in self._timings.items()}, funnel=self._funnel.to_dict(),
                       recent_errors=list(self._errors))
        out["buffer"] = self.buffer.stats()
        return out

    def close(self, timeout: float | None = None, drain: bool = False) -> None:
        """Stop and join the workers (idempotent); queued trajectories are discarded unless `drain`."""
        with self._cv:
            if not drain:
                self._counts["discarded"] += len(self._queue)
                self._queue.clear()
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)
        if self._own_pool:
            self.pool.close()

    def __enter__(self) -> "OnlineBranchMiner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
