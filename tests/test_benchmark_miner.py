"""The miner benchmark: `python -m benchmarks.miner --quick` ends with one JSON line of metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"pool_size", "filter_seconds", "naive_seconds_extrapolated", "speedup_vs_naive", "peak_rss_mb", "pairs_kept",
        "funnel", "branch_pairs_per_minute", "branch_yield", "generation_seconds", "kept_fraction", "gate_ok"}


@pytest.mark.slow
def test_quick_benchmark_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.miner", "--quick", "--no-branch", "--no-progress",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    metrics = json.loads(lines[-1])
    assert KEYS <= set(metrics), KEYS - set(metrics)
    assert metrics["pool_size"] == 6000 and metrics["branch_pairs_per_minute"] is None
    f = metrics["funnel"]
    assert list(f)[:6] == ["trajectories", "keyed", "same repo+commit", "same file", "same target", "distinct issues"]
    assert f["trajectories"] == 6000 and metrics["pairs_kept"] == f["verified"] > 0
    counts = [f[k] for k in ("trajectories", "keyed", "same repo+commit", "same file", "same target", "distinct issues")]
    assert counts == sorted(counts, reverse=True)
    assert metrics["speedup_vs_naive"] > 1 and metrics["comparisons"] < metrics["all_pairs"] / 1000
    saved = json.loads((tmp_path / "miner_funnel.json").read_text())
    assert saved["stages"] == f and "verify_rejects" in saved["notes"]
    assert "funnel: filter" in proc.stdout


def test_branch_part_is_optional(monkeypatch):
    from benchmarks import miner

    monkeypatch.setitem(sys.modules, "benchmarks.miner_branch", None)  # import fails: absent
    out = miner._branch_metrics(quick=True)
    assert out["branch_pairs_per_minute"] is None and out["branch_yield"] is None and out["branch_status"].startswith("absent")
    fake = types.ModuleType("benchmarks.miner_branch")
    fake.branch_benchmark = lambda quick: {"branch_pairs_per_minute": 42.0, "branch_yield": 0.25, "forks": 8}
    monkeypatch.setitem(sys.modules, "benchmarks.miner_branch", fake)
    out = miner._branch_metrics(quick=True)
    assert (out["branch_pairs_per_minute"], out["branch_yield"], out["branch_status"]) == (42.0, 0.25, "ok")
    assert miner._branch_metrics(quick=True, enabled=False)["branch_pairs_per_minute"] is None


def test_synthetic_pool_is_lazy_and_deterministic():
    from dataclasses import fields

    from benchmarks.synthetic_pool import SyntheticPool
    from contextrl.miner.targets import trajectory_targets
    from contextrl.trajectory import Step, Trajectory

    a, b = SyntheticPool(2000, seed=3), SyntheticPool(2000, seed=3)
    assert len(a) == 2000 and a[17] == b[17] == a[17 - 2000] and a[5] != a[6]
    t = a[123]
    assert 20 <= len(t.steps) <= 61 and t.metadata["repo"] and t.metadata["base_commit"] and t.problem_statement
    assert all(s == Step(**{f.name: getattr(s, f.name) for f in fields(Step)}) for s in t.steps)
    assert Trajectory.from_dict(t.to_dict()) == t
    assert all(trajectory_targets(a[i]) for i in range(0, 2000, 97))  # every diff names a target
    with pytest.raises(IndexError):
        a[2000]
