"""SandboxPool: warm hand-out, live cap, health check, background close."""

from __future__ import annotations

import threading
import time

import pytest

from contextrl.errors import ConfigError, SandboxError
from contextrl.sandboxes import LocalSandbox, PoolConfig, SandboxPool


def test_warm_pool_hands_out_ready_sandboxes_and_refills():
    made = []

    def factory():
        sb = LocalSandbox()
        made.append(sb)
        return sb

    with SandboxPool(factory, PoolConfig(warm=2, max_live=4)) as pool:
        assert pool.wait_warm(timeout=30)
        t0 = time.perf_counter()
        sb = pool.acquire()
        assert time.perf_counter() - t0 < 0.5 and sb.exec("echo ok").output == "ok\n"
        assert pool.stats["warm"] == 1
        pool.release(sb)
        assert pool.wait_warm(timeout=30)
    assert all(s.closed for s in made)


def test_max_live_blocks_then_times_out():
    with SandboxPool(LocalSandbox, PoolConfig(warm=0, max_live=1, acquire_timeout_s=1)) as pool:
        a = pool.acquire()
        with pytest.raises(SandboxError, match="max_live=1"):
            pool.acquire()
        got = []
        threading.Thread(target=lambda: got.append(pool.acquire()), daemon=True).start()
        time.sleep(0.2)
        pool.release(a)
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            time.sleep(0.05)
        assert got and got[0].exec("true").exit_code == 0
        pool.release(got[0])


def test_unhealthy_sandbox_is_replaced_before_hand_out():
    with SandboxPool(LocalSandbox, PoolConfig(warm=1, max_live=3)) as pool:
        assert pool.wait_warm(timeout=30)
        _, sb = pool._idle[0]
        sb._client.transport.proc.kill()  # the session dies while idle
        got = pool.acquire()
        assert got is not sb and got.exec("echo fine").output == "fine\n"
        assert pool.stats["unhealthy"] == 1
        pool.release(got)


def test_pool_config_is_validated():
    with pytest.raises(ConfigError, match="warm"):
        PoolConfig(warm=5, max_live=2)
