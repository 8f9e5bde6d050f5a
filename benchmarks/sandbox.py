"""Sandbox benchmark: what a step, a reset, a cold start and 128 live sandboxes cost.

    python -m benchmarks.sandbox [--quick]

Baselines are measured in the same run, against the same container where it applies:
- `docker_exec_ms`: one `docker exec <container> /bin/true` per command through the Docker
  API (exec_create + exec_start + exec_inspect), the way a per-command agent harness works;
- `local_subprocess_ms`: `subprocess.run("/bin/true", shell=True)` on the host (the sandbox
  takes shell command strings, so the floor is a shell running the command).
`step_overhead_ms` is `DockerSandbox.exec("/bin/true")` on a warm session. Ratios and the
gates are computed from these; absolute milliseconds are informative only.

The last stdout line is one JSON object; a human-readable table precedes it; progress
bars go to stderr. Every sandbox and pool is closed in `finally`, and the run ends by
counting this process's containers (label `contextrl.run=<RUN_ID>`) that still exist.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from benchmarks._util import (
    device_info,
    emit_json,
    mem_used_mb,
    peak_rss_mb,
    percentile,
    progress,
    summarize_ms,
    table,
    time_loop,
)

FULL = {"steps": 300, "docker_exec": 50, "docker_cli": 20, "local": 300, "reset": 30, "cold": 10, "concurrent": 128}
QUICK = {"steps": 100, "docker_exec": 20, "docker_cli": 10, "local": 100, "reset": 10, "cold": 3, "concurrent": 16}
WARMUP = 10
CREATE_WORKERS = 8
SANDBOX_MEMORY_MB = 256
RESET_GATE_MS = 100.0
STEP_VS_DOCKER_GATE = 0.05
STEP_VS_LOCAL_GATE = 2.0
FULL_CONCURRENCY = 128
SETUP_CMD = ("cd /workspace && git init -q && git add -A && git commit -qm 'contextrl: task start' --no-verify "
             "&& git rev-parse HEAD > /tmp/.contextrl_base")
"""The workspace setup CodingEnv runs for a task without a repo (HumanEval)."""


class Tracker:
    """Every sandbox this benchmark creates, so `finally` can close all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self.close_errors: list[str] = []

    def add(self, sb: Any) -> Any:
        with self._lock:
            self._open.append(sb)
        return sb

    def close(self, sbs: list[Any] | None = None, workers: int = CREATE_WORKERS, show: bool = False) -> float:
        """Close the given sandboxes (default: all still tracked) in parallel; return seconds taken."""
        with self._lock:
            todo = list(self._open) if sbs is None else [s for s in sbs if s in self._open]
        t0 = time.perf_counter()
        if not todo:
            return 0.0

        def one(sb: Any) -> None:
            try:
                sb.close()
            except Exception as e:  # noqa: BLE001 - recorded; the leak count will show it
                self.close_errors.append(f"{type(e).__name__}: {e}")
            with self._lock:
                if sb in self._open:
                    self._open.remove(sb)

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as ex:
            futs = [ex.submit(one, sb) for sb in todo]
            for f in progress(as_completed(futs), total=len(futs), desc="closing sandboxes", enabled=show):
                f.result()
        return time.perf_counter() - t0


def _loadavg() -> float | None:
    """1-minute load average: other work on the host skews every absolute number here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 5)


def _p50_ms(samples: list[float]) -> float:
    return round(percentile(samples, 50) * 1000.0, 4)


# -- phases -------------------------------------------------------------------------------
def bench_steps(sb: Any, n: int, show: bool) -> dict[str, Any]:
    """DockerSandbox.exec('/bin/true'), exec('true') and the two local baselines, interleaved
    round-robin so drift on the host affects all four alike."""
    def sb_true():
        r = sb.exec("/bin/true")
        if r.exit_code != 0:
            raise RuntimeError(f"exec('/bin/true') answered {r}")

    def sb_builtin():
        r = sb.exec("true")
        if r.exit_code != 0:
            raise RuntimeError(f"exec('true') answered {r}")

    def local_shell():
        if subprocess.run("/bin/true", shell=True).returncode != 0:
            raise RuntimeError("local /bin/true failed")

    def local_argv():
        if subprocess.run(["/bin/true"]).returncode != 0:
            raise RuntimeError("local /bin/true failed")

    fns = {"step": sb_true, "builtin": sb_builtin, "local_shell": local_shell, "local_argv": local_argv}
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    clock = time.perf_counter
    for i in progress(range(n), desc="steps vs local (x4 each)", enabled=show):
        k = i % len(names)
        for name in names[k:] + names[:k]:  # rotate the order each round
            t0 = clock()
            fns[name]()
            samples[name].append(clock() - t0)
    return {
        "step_overhead_ms": _p50_ms(samples["step"]),
        "builtin_overhead_ms": _p50_ms(samples["builtin"]),
        "local_subprocess_ms": _p50_ms(samples["local_shell"]),
        "local_argv_ms": _p50_ms(samples["local_argv"]),
        "detail": {k: summarize_ms(v) for k, v in samples.items()},
    }


def bench_docker_exec(api: Any, container_id: str, n: int, n_cli: int, show: bool) -> dict[str, Any]:
    """A fresh `docker exec` per command on the same container: API (timed gate baseline) and CLI."""
    def via_api():
        ex = api.exec_create(container_id, ["/bin/true"], stdout=True, stderr=True)
        api.exec_start(ex["Id"])
        code = api.exec_inspect(ex["Id"])["ExitCode"]
        if code != 0:
            raise RuntimeError(f"docker exec /bin/true exited {code}")

    api_s = time_loop(via_api, n, warmup=3, desc="docker exec (API)", show=show)
    out: dict[str, Any] = {"docker_exec_ms": _p50_ms(api_s), "detail": {"docker_exec_api": summarize_ms(api_s)}}
    cli = shutil.which("docker")
    if cli is None:
        out["docker_exec_cli_ms"] = None
        out["detail"]["docker_exec_cli"] = "docker CLI not on PATH"
        return out

    def via_cli():
        p = subprocess.run([cli, "exec", container_id, "/bin/true"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"docker exec CLI exited {p.returncode}: {p.stderr.decode(errors='replace')[-300:]}")

    cli_s = time_loop(via_cli, n_cli, warmup=2, desc="docker exec (CLI)", show=show)
    out["docker_exec_cli_ms"] = _p50_ms(cli_s)
    out["detail"]["docker_exec_cli"] = summarize_ms(cli_s)
    return out


def bench_cold_start(cfg: Any, tracker: Tracker, n: int, show: bool) -> dict[str, Any]:
    """DockerSandbox(cfg) + first exec('true') answered, container removed after each (untimed)."""
    from contextrl.sandboxes.docker import DockerSandbox

    samples, ctor, setup = [], [], []
    for _ in progress(range(n), desc="cold starts", enabled=show):
        t0 = time.perf_counter()
        sb = tracker.add(DockerSandbox(cfg))
        try:
            r = sb.exec("true")
            dt = time.perf_counter() - t0
            if r.exit_code != 0:
                raise RuntimeError(f"first exec on a fresh sandbox answered {r}")
            samples.append(dt)
            ctor.append(sb.cold_start_s)
            # What CodingEnv.reset does to a HumanEval sandbox, here on a quiet host (nothing
            # being created or removed alongside): the floor under `reset_ms`.
            t1 = time.perf_counter()
            sb.write_file("solution.py", "def f(x):\n    raise NotImplementedError\n")
            r = sb.exec(SETUP_CMD, timeout=60)
            if r.exit_code != 0:
                raise RuntimeError(f"workspace setup failed: {r.output[-300:]}")
            setup.append(time.perf_counter() - t1)
        finally:
            tracker.close([sb])
    return {"cold_start_ms": _p50_ms(samples), "workspace_setup_quiet_ms": _p50_ms(setup),
            "detail": {"cold_start": summarize_ms(samples), "cold_start_constructor": summarize_ms(ctor),
                       "workspace_setup_quiet": summarize_ms(setup)}}


def _wait_quiet(pool: Any, held: int, timeout: float = 120.0) -> None:
    """Warm sandboxes ready and no background create/close in flight (live == idle + held)."""
    if not pool.wait_warm(timeout=timeout):
        raise RuntimeError(f"pool did not reach warm={pool.config.warm} within {timeout:.0f}s; "
                           f"recent errors: {pool.recent_errors[-3:]}")
    deadline = time.monotonic() + timeout
    while pool.live > pool.idle + held:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool did not settle: live={pool.live} idle={pool.idle} held={held}")
        time.sleep(0.02)


def bench_reset(n: int, show: bool) -> dict[str, Any]:
    """`env.reset()` of contextrl/HumanEval-v0 on a shared warm SandboxPool(warm=4, max_live=16)."""
    import contextrl
    from contextrl.sandboxes import PoolConfig, SandboxPool, make_sandbox_factory

    factory = make_sandbox_factory("docker")
    pool = SandboxPool(factory, PoolConfig(warm=4, max_live=16), name="bench-reset")
    env = None
    try:
        env = contextrl.make("contextrl/HumanEval-v0", sandbox=pool)
        _wait_quiet(pool, held=0)
        env.reset(seed=0)  # untimed: loads the task list
        samples, internal = [], []
        cold_before = pool.stats["cold"]
        for i in progress(range(n), desc="env.reset (warm pool)", enabled=show):
            _wait_quiet(pool, held=1)
            t0 = time.perf_counter()
            env.reset(seed=i + 1)
            samples.append(time.perf_counter() - t0)
            internal.append(getattr(env.unwrapped, "_reset_s", float("nan")))
        stats = dict(pool.stats)
        cold = pool.stats["cold"] - cold_before
    finally:
        try:
            if env is not None:
                env.close()
        finally:
            pool.close()
    return {"reset_ms": _p50_ms(samples),
            "detail": {"reset": summarize_ms(samples), "reset_acquire_and_setup": summarize_ms(internal),
                       "reset_cold_acquires": cold, "reset_pool_stats": stats}}


def bench_concurrent(cfg: Any, tracker: Tracker, target: int, show: bool) -> dict[str, Any]:
    """Create `target` sandboxes from CREATE_WORKERS threads, keep all alive, run one command in
    every one, count the correct answers, then close them all in parallel."""
    from contextrl.sandboxes.docker import DockerSandbox

    mem0 = mem_used_mb()
    errors: list[str] = []
    live: list[Any] = []
    t0 = time.perf_counter()

    def make_one(_: int):
        return tracker.add(DockerSandbox(cfg))

    answered, exec_s, mem1 = 0, 0.0, float("nan")
    try:
        with ThreadPoolExecutor(max_workers=CREATE_WORKERS) as ex:
            futs = [ex.submit(make_one, i) for i in range(target)]
            for f in progress(as_completed(futs), total=target, desc=f"creating {target} sandboxes", enabled=show):
                try:
                    live.append(f.result())
                except Exception as e:  # noqa: BLE001 - counted, reported
                    errors.append(f"create: {type(e).__name__}: {e}")
        create_s = time.perf_counter() - t0
        time.sleep(1.0)  # let page cache / shims settle before reading memory
        mem1 = mem_used_mb()

        def check(i_sb: tuple[int, Any]) -> bool:
            i, sb = i_sb
            r = sb.exec(f"echo ok-{i}-$(id -u)", timeout=60)
            want = f"ok-{i}-{sb.config.uid if sb.config.uid is not None else 0}\n"
            if r.exit_code != 0 or r.output != want:
                raise RuntimeError(f"sandbox {sb.id}: exit {r.exit_code}, output {r.output[-200:]!r} (want {want!r})")
            return True

        t1 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CREATE_WORKERS) as ex:
            futs = [ex.submit(check, (i, sb)) for i, sb in enumerate(live)]
            for f in progress(as_completed(futs), total=len(futs), desc="one command in each", enabled=show):
                try:
                    answered += bool(f.result())
                except Exception as e:  # noqa: BLE001
                    errors.append(f"exec: {type(e).__name__}: {e}")
        exec_s = time.perf_counter() - t1
    finally:
        close_s = tracker.close(live, show=show)
    containers = len(live)
    delta = round(mem1 - mem0, 1)
    return {"concurrent_sandboxes": answered, "concurrent_target": target, "concurrent_created": containers,
            "concurrent_create_s": round(create_s, 3), "concurrent_exec_all_s": round(exec_s, 3),
            "concurrent_close_s": round(close_s, 3), "mem_used_mb": delta,
            "mem_per_sandbox_mb": round(delta / containers, 2) if containers else None,
            "concurrent_errors": errors[:10], "concurrent_error_count": len(errors)}


def count_leaked(api: Any) -> int:
    from contextrl.sandboxes.dockerclient import LABEL, LABEL_RUN, RUN_ID

    return len(api.containers(all=True, filters={"label": [LABEL, f"{LABEL_RUN}={RUN_ID}"]}))


# -- driver -------------------------------------------------------------------------------
def run(quick: bool, show: bool, target: int | None = None) -> tuple[dict[str, Any], int]:
    from contextrl.sandboxes import SandboxLimits
    from contextrl.sandboxes.docker import DockerSandbox, DockerSandboxConfig
    from contextrl.sandboxes.dockerclient import RUN_ID, docker_client
    from contextrl.sandboxes.image import ensure_default_image

    sizes = dict(QUICK if quick else FULL)
    if target is not None:
        sizes["concurrent"] = target
    t_start = time.perf_counter()
    load_start = _loadavg()
    api = docker_client()
    image = ensure_default_image()
    try:
        ver = api.version()
        dinfo = api.info()
        docker_facts = {"docker_server": ver.get("Version"), "docker_api": ver.get("ApiVersion"),
                        "storage_driver": dinfo.get("Driver"), "cgroup_version": dinfo.get("CgroupVersion"),
                        "docker_ncpu": dinfo.get("NCPU")}
    except Exception:  # noqa: BLE001 - informative only
        docker_facts = {}
    cfg = DockerSandboxConfig(image=image, limits=SandboxLimits(memory_mb=SANDBOX_MEMORY_MB))
    metrics: dict[str, Any] = {"benchmark": "sandbox", "quick": quick, "run_id": RUN_ID, "image": image,
                               "sizes": sizes, "sandbox_memory_mb": SANDBOX_MEMORY_MB}
    detail: dict[str, Any] = {}
    errors: list[str] = []
    tracker = Tracker()

    def phase(name: str, fn, *a) -> None:
        t0 = time.perf_counter()
        try:
            res = fn(*a)
            detail.update(res.pop("detail", {}))
            metrics.update(res)
        except Exception as e:  # noqa: BLE001 - the JSON line must still come out
            errors.append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
        detail.setdefault("phase_s", {})[name] = round(time.perf_counter() - t0, 2)

    try:
        sb = tracker.add(DockerSandbox(cfg))
        try:
            phase("steps", bench_steps, sb, sizes["steps"], show)
            phase("docker_exec", bench_docker_exec, api, sb.container_id, sizes["docker_exec"], sizes["docker_cli"], show)
        finally:
            tracker.close([sb])
        phase("cold_start", bench_cold_start, cfg, tracker, sizes["cold"], show)
        phase("reset", bench_reset, sizes["reset"], show)
        phase("concurrent", bench_concurrent, cfg, tracker, sizes["concurrent"], show)
    finally:
        tracker.close(show=show)
    if tracker.close_errors:
        errors += [f"close: {e}" for e in tracker.close_errors[:5]]
    try:
        metrics["leaked_containers"] = count_leaked(api)
    except Exception as e:  # noqa: BLE001
        metrics["leaked_containers"] = None
        errors.append(f"leak count: {type(e).__name__}: {e}")

    step, dexec, local = metrics.get("step_overhead_ms"), metrics.get("docker_exec_ms"), metrics.get("local_subprocess_ms")
    metrics["step_vs_docker_exec"] = _ratio(step, dexec)
    metrics["step_vs_local"] = _ratio(step, local)
    metrics["builtin_vs_docker_exec"] = _ratio(metrics.get("builtin_overhead_ms"), dexec)
    tgt = metrics.get("concurrent_target", sizes["concurrent"])
    conc = metrics.get("concurrent_sandboxes")
    gates: dict[str, bool | None] = {
        "step_le_5pct_docker_exec": None if step is None or dexec is None else step <= STEP_VS_DOCKER_GATE * dexec,
        "step_le_2x_local_subprocess": None if step is None or local is None else step <= STEP_VS_LOCAL_GATE * local,
        "reset_le_100ms": None if metrics.get("reset_ms") is None else metrics["reset_ms"] <= RESET_GATE_MS,
        "concurrent_ge_target": None if conc is None else conc >= tgt,
        "no_leaked_containers": metrics.get("leaked_containers") == 0,
    }
    if not quick:
        gates["concurrent_ge_128"] = None if conc is None else conc >= FULL_CONCURRENCY
    gates["all"] = all(v is True for v in gates.values())
    metrics["gates"] = gates
    metrics["device"] = device_info({**docker_facts, "loadavg_1m_start": load_start, "loadavg_1m_end": _loadavg()})
    metrics["peak_rss_mb"] = peak_rss_mb()
    metrics["total_s"] = round(time.perf_counter() - t_start, 2)
    metrics["errors"] = errors
    metrics["detail"] = detail
    return metrics, (1 if errors else 0)


def print_table(m: dict[str, Any]) -> None:
    rows = [
        ("step_overhead_ms  (exec /bin/true)", m.get("step_overhead_ms")),
        ("builtin_overhead_ms  (exec true)", m.get("builtin_overhead_ms")),
        ("docker_exec_ms  (API, per command)", m.get("docker_exec_ms")),
        ("docker_exec_cli_ms  (informative)", m.get("docker_exec_cli_ms")),
        ("local_subprocess_ms  (shell=True)", m.get("local_subprocess_ms")),
        ("local_argv_ms  (informative)", m.get("local_argv_ms")),
        ("step_vs_docker_exec  (gate <= 0.05)", m.get("step_vs_docker_exec")),
        ("step_vs_local  (gate <= 2)", m.get("step_vs_local")),
        ("reset_ms  (gate <= 100)", m.get("reset_ms")),
        ("workspace_setup_quiet_ms  (reset floor)", m.get("workspace_setup_quiet_ms")),
        ("cold_start_ms", m.get("cold_start_ms")),
        (f"concurrent_sandboxes  (target {m.get('concurrent_target')})", m.get("concurrent_sandboxes")),
        ("concurrent_create_s", m.get("concurrent_create_s")),
        ("mem_used_mb  (all live, delta)", m.get("mem_used_mb")),
        ("leaked_containers", m.get("leaked_containers")),
        ("gates", " ".join(f"{k}={'PASS' if v else 'FAIL' if v is False else '-'}" for k, v in m["gates"].items())),
        ("total_s", m.get("total_s")),
    ]
    dev = m["device"]
    title = (f"contextrl sandbox benchmark ({'quick' if m['quick'] else 'full'}, {dev['cpu_count']} cpus, "
             f"load {dev.get('loadavg_1m_start')} -> {dev.get('loadavg_1m_end')})")
    print(table([(k, "-" if v is None else v) for k, v in rows], title=title), flush=True)
    for e in m.get("errors") or []:
        print(f"error: {e}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sandbox", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sample sizes, 16 concurrent sandboxes (< 1 minute)")
    ap.add_argument("--concurrent", type=int, default=None, metavar="N", help="override the concurrency target")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    args = ap.parse_args(argv)
    show = not args.no_progress and os.environ.get("CONTEXTRL_NO_PROGRESS") != "1"
    metrics, rc = run(args.quick, show, args.concurrent)
    print_table(metrics)
    emit_json(metrics)
    return rc


if __name__ == "__main__":
    sys.exit(main())
