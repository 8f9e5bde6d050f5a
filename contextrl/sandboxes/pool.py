"""`SandboxPool`: warm sandboxes ready before an episode needs one.

Sandboxes are single-use: an episode dirties its filesystem, and recreating a container
is cheaper and safer than cleaning one. The pool keeps `warm` idle sandboxes created
ahead of time in a background thread, caps live sandboxes at `max_live`, limits the
creation rate, health-checks a sandbox before handing it out, recycles idle ones older
than `max_idle_s`, and closes released ones in the background. `close()` (or the atexit
backstop) closes everything it made.
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from contextrl.errors import ConfigError, SandboxError
from contextrl.sandboxes.base import Sandbox


@dataclass(frozen=True)
class PoolConfig:
    """Sizes and rates of a sandbox pool."""

    warm: int = 1
    """Idle sandboxes kept ready."""
    max_live: int = 64
    """Cap on sandboxes alive at once (idle + handed out)."""
    create_per_s: float = 20.0
    """Creation rate limit (sandboxes per second), to spare the daemon."""
    max_idle_s: float = 600.0
    """Idle sandboxes older than this are replaced."""
    acquire_timeout_s: float = 300.0
    """How long `acquire` waits for capacity before raising."""
    refill_delay_s: float = 0.25
    """After a hand-out, wait this long before creating a replacement, so the refill does not
    compete with the episode that just started setting up (on small machines it matters)."""

    def __post_init__(self) -> None:
        if self.warm < 0 or self.max_live < 1 or self.warm > self.max_live:
            raise ConfigError(f"PoolConfig: need 0 <= warm ({self.warm}) <= max_live ({self.max_live}) and max_live >= 1")
        if self.create_per_s <= 0:
            raise ConfigError("PoolConfig.create_per_s must be > 0")


_POOLS: "weakref.WeakSet[SandboxPool]" = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
    for p in list(_POOLS):
        try:
            p.close()
        except Exception:
            pass


class SandboxPool:
    def __init__(self, factory: Callable[[], Sandbox], config: PoolConfig | None = None, name: str = "pool"):
        self.factory = factory
        self.config = config or PoolConfig()
        self.name = name
        self._idle: collections.deque[tuple[float, Sandbox]] = collections.deque()
        self._live = 0
        self._cv = threading.Condition()
        self._closed = False
        self._next_create = 0.0
        self._last_acquire = 0.0
        self._closer = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{name}-close")
        self._errors: collections.deque[str] = collections.deque(maxlen=20)
        self.stats = collections.Counter()
        self._filler = threading.Thread(target=self._fill_loop, name=f"{name}-fill", daemon=True)
        self._filler.start()
        _POOLS.add(self)

    # -- creation ---------------------------------------------------------------------
    def _rate_wait(self) -> None:
        with self._cv:
            now = time.monotonic()
            wait = self._next_create - now
            self._next_create = max(now, self._next_create) + 1.0 / self.config.create_per_s
        if wait > 0:
            time.sleep(wait)

    def _create(self) -> Sandbox:
        self._rate_wait()
        try:
            sb = self.factory()
        except BaseException:
            with self._cv:
                self._live -= 1
                self._cv.notify_all()
            self.stats["create_failed"] += 1
            raise
        self.stats["created"] += 1
        return sb

    def _fill_loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (len(self._idle) >= self.config.warm or self._live >= self.config.max_live):
                    self._cv.wait(timeout=1.0)
                    self._expire_idle_locked()
                if self._closed:
                    return
                quiet = self._last_acquire + self.config.refill_delay_s - time.monotonic()
                if quiet > 0:
                    self._cv.wait(timeout=quiet)
                    continue
                self._live += 1
            try:
                sb = self._create()
            except Exception as e:  # noqa: BLE001 - recorded, retried with backoff
                self._errors.append(f"{type(e).__name__}: {e}")
                time.sleep(1.0)
                continue
            with self._cv:
                if self._closed:
                    self._live -= 1
                    self._closer.submit(sb.close)
                    return
                self._idle.append((time.monotonic(), sb))
                self._cv.notify_all()

    def _expire_idle_locked(self) -> None:
        now = time.monotonic()
        while self._idle and now - self._idle[0][0] > self.config.max_idle_s:
            _, sb = self._idle.popleft()
            self._live -= 1
            self.stats["expired"] += 1
            self._closer.submit(sb.close)

    # -- hand-out ---------------------------------------------------------------------
    def acquire(self) -> Sandbox:
        """A healthy sandbox, warm if one is ready; blocks while the pool is at `max_live`."""
        deadline = time.monotonic() + self.config.acquire_timeout_s
        while True:
            with self._cv:
                if self._closed:
                    raise SandboxError(f"{self.name}: pool is closed")
                self._expire_idle_locked()
                self._last_acquire = time.monotonic()
                if self._idle:
                    _, sb = self._idle.popleft()
                    self._cv.notify_all()
                elif self._live < self.config.max_live:
                    self._live += 1
                    sb = None
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SandboxError(f"{self.name}: no sandbox free within {self.config.acquire_timeout_s:.0f}s "
                                           f"(max_live={self.config.max_live}); release sandboxes or raise max_live")
                    self._cv.wait(timeout=min(left, 1.0))
                    continue
            if sb is None:
                sb = self._create()
                self.stats["cold"] += 1
                return sb
            if sb.is_alive():
                self.stats["warm"] += 1
                return sb
            self.stats["unhealthy"] += 1
            self.release(sb)

    def release(self, sb: Sandbox) -> None:
        """Give a sandbox back; it is closed in the background and a fresh one is made."""
        self._closer.submit(self._close_one, sb)

    def _close_one(self, sb: Sandbox) -> None:
        try:
            sb.close()
        except Exception as e:  # noqa: BLE001
            self._errors.append(f"close: {e}")
        finally:
            with self._cv:
                self._live -= 1
                self._cv.notify_all()

    @property
    def live(self) -> int:
        return self._live

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def recent_errors(self) -> list[str]:
        return list(self._errors)

    def wait_warm(self, n: int | None = None, timeout: float = 120.0) -> bool:
        """Block until `n` (default: config.warm) sandboxes are idle and ready."""
        n = self.config.warm if n is None else n
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self._idle) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(timeout=min(left, 0.5))
        return True

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            idle = [sb for _, sb in self._idle]
            self._idle.clear()
            self._cv.notify_all()
        for sb in idle:
            self._closer.submit(self._close_one, sb)
        self._filler.join(timeout=120)
        self._closer.shutdown(wait=True)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
