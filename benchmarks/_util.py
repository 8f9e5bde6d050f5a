"""Shared helpers for `python -m benchmarks.<name>`: percentiles, timing loops, memory,
device facts, a plain-text table and the final JSON line (see DESIGN.md, "Benchmarks")."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import time
from typing import Any, Callable, Iterable, Sequence

from tqdm import tqdm


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q={q} must be within [0, 100]")
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max in milliseconds of samples given in seconds."""
    ms = [s * 1000.0 for s in samples_s]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": round(percentile(ms, 50), 4), "p90": round(percentile(ms, 90), 4),
            "p99": round(percentile(ms, 99), 4), "mean": round(sum(ms) / len(ms), 4),
            "min": round(min(ms), 4), "max": round(max(ms), 4)}


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True, **kw):
    """A tqdm bar on stderr (so stdout keeps the table and the JSON line)."""
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True, **kw)


def time_loop(fn: Callable[[], Any], n: int, *, warmup: int = 0, desc: str = "", show: bool = True,
              check: Callable[[Any], bool] | None = None) -> list[float]:
    """Call `fn` `warmup` times untimed, then `n` times timed; return the n durations in seconds.

    Only the call itself is inside the timed region (the progress bar update is not).
    `check`, when given, must accept every timed result or a RuntimeError is raised.
    """
    for _ in range(warmup):
        fn()
    out: list[float] = []
    clock = time.perf_counter
    for _ in progress(range(n), desc=desc, enabled=show):
        t0 = clock()
        res = fn()
        out.append(clock() - t0)
        if check is not None and not check(res):
            raise RuntimeError(f"{desc or 'time_loop'}: unexpected result {res!r}")
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0 / 1024.0, 1)


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                parts = v.split()
                if parts:
                    out[k] = int(parts[0])  # KiB
    except OSError:
        pass
    return out


def mem_used_mb() -> float:
    """Host memory in use (MemTotal - MemAvailable), MiB; NaN where /proc/meminfo is missing."""
    m = _meminfo()
    if "MemTotal" not in m or "MemAvailable" not in m:
        return math.nan
    return round((m["MemTotal"] - m["MemAvailable"]) / 1024.0, 1)


def mem_total_mb() -> float:
    m = _meminfo()
    return round(m["MemTotal"] / 1024.0, 1) if "MemTotal" in m else math.nan


def device_info(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Facts about the machine the numbers came from."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    info = {"cpu_count": os.cpu_count(), "cpu_affinity": affinity, "mem_total_mb": mem_total_mb(),
            "platform": platform.platform(), "python": platform.python_version(), "machine": platform.machine()}
    if extra:
        info.update(extra)
    return info


def table(rows: Sequence[tuple[str, Any]], title: str = "") -> str:
    """A two-column plain-text table."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [(str(k), fmt(v)) for k, v in rows]
    w = max((len(k) for k, _ in cells), default=0)
    lines = [title, "-" * max(len(title), w + 12)] if title else []
    lines += [f"{k.ljust(w)}  {v}" for k, v in cells]
    return "\n".join(lines)


def _jsonable(o: Any) -> Any:
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    return o


def emit_json(metrics: dict[str, Any]) -> str:
    """Print the metrics as one JSON line (NaN/inf become null) and flush; it must be the last stdout line."""
    sys.stderr.flush()
    line = json.dumps(_jsonable(metrics), separators=(",", ":"), sort_keys=False)
    print(line, flush=True)
    return line
