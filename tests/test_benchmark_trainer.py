"""`python -m benchmarks.trainer --tiny` end to end in a subprocess: the last stdout line is one
JSON object with the metrics the benchmark promises (tiny local Qwen2, synthetic pairs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "grpo_step_s", "contextrl_step_s", "ca_overhead_ratio", "ca_overhead_ratio_cpu", "ca_overhead_ratio_est_flops",
    "ca_overhead_ratio_est_smollm2", "ca_term_forward_s", "ca_accuracy_before", "ca_accuracy_after", "ca_steps", "steps",
    "warmup_steps", "heldout_pairs", "train_pairs", "ratio_model", "accuracy_model", "gate_ok", "ca_overhead_gate",
    "target_met", "proportions", "pairs", "device", "torch_threads", "pinned_cpu", "host_steal_s",
    "malloc",
}


@pytest.mark.slow
def test_tiny_benchmark_prints_the_metrics(tmp_path):
    env = {**os.environ, "CONTEXTRL_NO_PROGRESS": "1", "CONTEXTRL_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.trainer", "--tiny", "--no-progress"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: the ratio gate failed (meaningless at tiny size)
    lines = proc.stdout.strip().splitlines()
    metrics = json.loads(lines[-1])
    assert KEYS <= set(metrics), sorted(KEYS - set(metrics))
    assert metrics["mode"] == "tiny" and metrics["steps"] >= 1 and metrics["ca_steps"] >= 1
    assert metrics["torch_threads"] == 1  # the default: steadier step times on a shared host
    assert metrics["malloc"] == "reuse"  # the default on glibc (this machine)
    assert metrics["control"] is False and metrics["ca_term_forward_s"] > 0
    assert metrics["ca_overhead_ratio"] == pytest.approx(metrics["contextrl_step_s"] / metrics["grpo_step_s"], rel=1e-2)
    assert len(metrics["grpo_step_samples_s"]) == len(metrics["contextrl_step_samples_s"]) == metrics["steps"]
    for key in ("ca_accuracy_before", "ca_accuracy_after"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["heldout_pairs"] > 0 and metrics["train_pairs"] > 0
    assert metrics["gate_ok"] == (metrics["ca_overhead_ratio"] <= metrics["ca_overhead_gate"])
    assert proc.returncode == (0 if metrics["gate_ok"] else 1)
    assert any("ca_overhead_ratio" in line for line in lines[:-1])  # the table before the JSON line
    assert not list(tmp_path.iterdir())  # --tiny mines nothing and caches nothing


def _run_baton(baton, steps: dict[str, int]) -> list[tuple[str, int]]:
    """Threads that each take `steps[name]` turns; the order the turns were taken in."""
    log: list[tuple[str, int]] = []

    def worker(name: str, n: int) -> None:
        for k in range(n):
            baton.next_step(name)
            log.append((name, k))
            time.sleep(0.005)
        baton.done(name)

    threads = [threading.Thread(target=worker, args=item) for item in steps.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return log


def test_baton_alternates_whole_steps():
    from benchmarks.trainer import _Baton

    log = _run_baton(_Baton(["grpo", "contextrl"]), {"grpo": 2, "contextrl": 4})
    # counterbalanced rounds: grpo first, then contextrl first; once grpo is done, contextrl runs on
    assert log == [("grpo", 0), ("contextrl", 0), ("contextrl", 1), ("grpo", 1), ("contextrl", 2), ("contextrl", 3)]


def test_baton_round_robin_without_counterbalancing():
    from benchmarks.trainer import _Baton

    log = _run_baton(_Baton(["a", "b"], counterbalance=False), {"a": 3, "b": 3})
    assert log == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_split_by_task_keeps_tasks_apart():
    from benchmarks.trainer import split_by_task, synthetic_pairs
    from contextrl.miner.pair import Provenance

    pairs = [replace(p, provenance=Provenance("branch", (f"ep{i}", f"task{i % 5}"))) for i, p in enumerate(synthetic_pairs(20))]
    train, held = split_by_task(pairs, 6)
    assert len(held) == 6
    assert not {p.provenance.sources[-1] for p in train} & {p.provenance.sources[-1] for p in held}
    assert len(train) + len(held) <= 20 and len(train) >= 8


class _FakeTrainer:
    """What `interleaved_step_times` uses of a trainer: `add_callback`, `train` (firing the step
    callbacks) and `_generate_and_score_completions`. Each phase sleeps `pause` seconds and is
    logged as (name, phase); the thread's CPU affinity during `train` is kept in `affinity`."""

    def __init__(self, name: str, log: list, pause: float = 0.0, steps: int = 2):
        self.name, self.log, self.pause, self.steps, self.callbacks, self.affinity = name, log, pause, steps, [], None

    def add_callback(self, cb):
        self.callbacks.append(cb)

    def _generate_and_score_completions(self, inputs):
        self._phase("gen")
        return inputs

    def _phase(self, phase: str) -> None:
        self.log.append((self.name, phase))
        time.sleep(self.pause)

    def _call(self, event):
        for cb in self.callbacks:
            getattr(cb, event)(None, None, None)

    def train(self):
        self.affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        for _ in range(self.steps):
            self._call("on_step_begin")
            self._generate_and_score_completions({})
            self._phase("mb0")
            self._call("on_substep_end")
            self._phase("mb1")
            self._call("on_step_end")


def test_trainer_threads_run_on_the_pinned_cpu():
    from benchmarks.trainer import bench_cpu, interleaved_step_times

    cpu = bench_cpu()
    if cpu is None:
        pytest.fail("no sched_getaffinity here: the benchmark cannot pin its trainer threads (Linux only)")
    trainers = {k: _FakeTrainer(k, []) for k in "ab"}
    times = interleaved_step_times(trainers, cpu=cpu)
    assert {k: t.affinity for k, t in trainers.items()} == {"a": {cpu}, "b": {cpu}}
    assert os.sched_getaffinity(0) != {cpu} or len(os.sched_getaffinity(0)) == 1  # the caller is not pinned
    assert [len(v) for v in times.values()] == [2, 2]
    assert all(x.wall >= 0 and x.cpu >= 0 and (x.page_faults is None or x.page_faults >= 0) for v in times.values() for x in v)


def test_turns_interleave_phases_and_count_only_held_time():
    """The turn passes after generation and after each micro-step but the last: the trainers run
    the same phase back to back, and a step's time is the sum of its own turns (not the wall
    span from its first to its last, which includes the other's)."""
    from benchmarks.trainer import interleaved_step_times

    log: list[tuple[str, str]] = []
    pause = 0.05
    times = interleaved_step_times({k: _FakeTrainer(k, log, pause) for k in "ab"})
    step1 = log[:6]
    assert [phase for _, phase in step1] == ["gen", "gen", "mb0", "mb0", "mb1", "mb1"]
    assert [name for name, _ in step1] == ["a", "b", "b", "a", "a", "b"]  # counterbalanced per phase
    for name in "ab":
        assert len(times[name]) == 2
        for x in times[name]:  # three held phases of `pause` each; the other's three are not counted
            assert 3 * pause <= x.wall < 5 * pause, times


def test_host_steal_seconds_reads_proc_stat():
    from benchmarks.trainer import host_steal_seconds

    first = host_steal_seconds()
    if not Path("/proc/stat").exists():
        assert first is None
        return
    assert first is not None and first >= 0
    assert host_steal_seconds() >= first  # a counter since boot: never goes back


@pytest.mark.slow
def test_tiny_control_run_has_no_pair_term_and_no_gate(tmp_path):
    """--control: the A/A run (the second trainer in mode grpo) reports its ratio without a gate."""
    env = {**os.environ, "CONTEXTRL_NO_PROGRESS": "1", "CONTEXTRL_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.trainer", "--tiny", "--control", "--no-progress"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["control"] is True and metrics["gate_ok"] is None
    assert metrics["ca_term_forward_s"] == 0.0  # the pair term never ran
    assert "ca_accuracy_after" not in metrics  # the control run is the overhead part only
    assert metrics["ca_overhead_ratio"] > 0


FAULT_PROBE = """
import resource, sys, threading, torch
from benchmarks.trainer import reuse_freed_memory
applied = sys.argv[1] == "reuse" and reuse_freed_memory()
faults = []
def step():  # a trainer thread: large short-lived activations, as in a training step
    for _ in range(3):
        for mb in (8, 40, 100):
            a = torch.ones(mb << 18); b = torch.ones(mb << 17); del a, b
    f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(4):
        for mb in (8, 40, 100):
            a = torch.ones(mb << 18); b = torch.ones(mb << 17); del a, b
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0)
t = threading.Thread(target=step); t.start(); t.join()
print(applied, faults[0])
"""


def test_reuse_freed_memory_stops_refaulting_large_blocks_in_threads():
    """Under glibc's default, a thread's freed 8-150 MiB tensors go back to the kernel and the next
    step faults them in again (~1 fault per 4 KiB page); after `reuse_freed_memory` the same
    step reuses them. Run in subprocesses: the setting is process-wide."""
    if not hasattr(__import__("resource"), "RUSAGE_THREAD"):
        pytest.fail("no RUSAGE_THREAD here: Linux only")
    out = {}
    for mode in ("default", "reuse"):
        proc = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        applied, faults = proc.stdout.split()
        out[mode] = (applied, int(faults))
    assert out["reuse"][0] == "True", "mallopt was not applied (is this glibc?)"
    touched = 4 * (8 + 40 + 100) * 3 // 2 * 256  # 4 KiB pages written in the measured loop
    assert out["default"][1] > 0.4 * touched, out  # the default really re-faults (else this test shows nothing)
    # reuse: mostly 0; now and then one block lands above the heap's top and is faulted in once
    # (12.8 k faults seen once in ten runs), still a fraction of the default's ~105 k
    assert out["reuse"][1] < 0.25 * out["default"][1], out
