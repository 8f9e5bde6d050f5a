"""`python -m benchmarks.sandbox --quick` runs end to end against the Docker daemon,
prints one JSON object as its last line, leaks no container and keeps every sandbox
of its concurrency target alive and answering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

REQUIRED_KEYS = (
    "step_overhead_ms", "builtin_overhead_ms", "docker_exec_ms", "docker_exec_cli_ms", "local_subprocess_ms",
    "local_argv_ms", "reset_ms", "cold_start_ms", "concurrent_sandboxes", "concurrent_target",
    "concurrent_create_s", "mem_used_mb", "leaked_containers", "step_vs_docker_exec", "step_vs_local",
    "gates", "quick", "device",
)
GATE_KEYS = ("step_le_5pct_docker_exec", "step_le_2x_local_subprocess", "reset_le_100ms", "concurrent_ge_target",
             "no_leaked_containers")


def _require_docker() -> None:
    from contextrl.sandboxes.dockerclient import docker_available

    if not docker_available():
        if os.environ.get("CI") == "true":
            pytest.fail("no Docker daemon answers, and CI=true: docker tests must run in CI")
        pytest.skip("no Docker daemon answers")


@pytest.mark.docker
@pytest.mark.slow
def test_quick_sandbox_benchmark_last_line_is_json():
    _require_docker()
    env = {**os.environ, "CONTEXTRL_NO_PROGRESS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sandbox", "--quick"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no output; rc={proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    m = json.loads(lines[-1])
    diag = f"rc={proc.returncode} errors={m.get('errors')}\nstderr:\n{proc.stderr[-3000:]}"

    missing = [k for k in REQUIRED_KEYS if k not in m]
    assert not missing, f"missing keys {missing}; {diag}"
    assert m["quick"] is True
    assert not m["errors"], diag
    assert proc.returncode == 0, diag
    assert set(GATE_KEYS) <= set(m["gates"]), m["gates"]
    assert all(isinstance(m["gates"][k], bool) for k in GATE_KEYS), m["gates"]
    assert {"cpu_count", "mem_total_mb"} <= set(m["device"])

    assert m["leaked_containers"] == 0, diag
    assert m["concurrent_target"] == 16
    assert m["concurrent_sandboxes"] == m["concurrent_target"], f"{m.get('concurrent_errors')}; {diag}"

    for k in ("step_overhead_ms", "builtin_overhead_ms", "docker_exec_ms", "local_subprocess_ms", "reset_ms",
              "cold_start_ms"):
        assert isinstance(m[k], (int, float)) and m[k] > 0, (k, m[k])
    assert m["step_vs_docker_exec"] == pytest.approx(m["step_overhead_ms"] / m["docker_exec_ms"], rel=1e-3)
    assert m["step_vs_local"] == pytest.approx(m["step_overhead_ms"] / m["local_subprocess_ms"], rel=1e-3)
    # The table comes before the JSON line.
    assert any("step_overhead_ms" in ln for ln in lines[:-1])
