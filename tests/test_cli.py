"""The `contextrl` command line, run as a user would."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "contextrl", *args], capture_output=True, text=True, timeout=timeout)


def test_env_list_shows_every_versioned_id():
    r = run("env", "list")
    assert r.returncode == 0
    assert r.stdout.split() == ["contextrl/BugFix-v0", "contextrl/HumanEval-v0", "contextrl/Task-v0"]


def test_unknown_env_id_exits_2_with_suggestion():
    r = run("env", "run", "contextrl/BugFx-v0")
    assert r.returncode == 2 and "Did you mean: contextrl/BugFix-v0" in r.stderr


def test_env_run_with_local_sandbox_on_a_spec(tmp_path):
    r = run("env", "run", "contextrl/Task-v0", "--spec", "examples/tasks", "--sandbox", "local", "--n", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "resolve rate 2/2 = 1.00" in r.stdout and len(list(tmp_path.glob("*.jsonl"))) == 2


@pytest.mark.docker
def test_sandbox_ls_and_prune_remove_labelled_leftovers():
    from contextrl.sandboxes.docker import DockerSandbox

    sb = DockerSandbox()
    run_id = __import__("contextrl.sandboxes.dockerclient", fromlist=["RUN_ID"]).RUN_ID
    try:
        r = run("sandbox", "ls", "--run", run_id)
        assert sb.container_id[:12] in r.stdout
        r = run("sandbox", "prune", "--run", run_id)
        assert r.returncode == 0 and "removed 1 container" in r.stdout
        r = run("sandbox", "ls", "--run", run_id)
        assert "0 contextrl container(s)" in r.stdout
    finally:
        sb.close()  # already pruned: close must still succeed


def test_traj_import_converts_real_files_and_reports_failures(tmp_path):
    out = tmp_path / "t.jsonl"
    r = run("traj", "import", "../shared/fixtures/mini_swe_agent", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "trajectories" in r.stdout and "mini_swe_agent=" in r.stdout
    from contextrl.trajectory import read_trajectories

    trajs = list(read_trajectories(out))
    assert trajs and all(t.steps for t in trajs if t.source == "mini_swe_agent")
