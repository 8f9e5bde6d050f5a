"""Sandbox behaviour on both backends, and Docker-only isolation and fault handling."""

from __future__ import annotations

import os
import resource
import subprocess

import pytest

from contextrl.errors import DockerUnavailableError, SandboxError
from contextrl.sandboxes import LocalSandbox, SandboxLimits


def test_exec_output_exit_code_and_persistent_cwd(sandbox):
    r = sandbox.exec("echo hello; echo err >&2; exit 3")
    assert r.exit_code == 3 and "hello" in r.output and "err" in r.output
    sandbox.exec("mkdir -p sub/dir && cd sub/dir")
    assert sandbox.exec("pwd").output.strip().endswith("/sub/dir")


def test_timeout_kills_command_and_sandbox_stays_usable(sandbox):
    r = sandbox.exec("echo start; sleep 60; echo never", timeout=1)
    assert r.timed_out and r.exit_code == 124 and "start" in r.output and "never" not in r.output
    assert r.session_restarted
    assert r.duration_s < 10
    assert sandbox.exec("echo alive").output == "alive\n"


def test_shell_level_infinite_loop_restarts_shell_keeps_cwd(sandbox):
    sandbox.exec("mkdir -p keep && cd keep")
    r = sandbox.exec("while :; do :; done", timeout=1)
    assert r.timed_out and r.session_restarted
    assert sandbox.exec("pwd").output.strip().endswith("/keep")


def test_huge_output_is_truncated_with_marker_and_bounded_memory(sandbox):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = sandbox.exec("head -c 100000000 /dev/zero | tr '\\0' x", timeout=120)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert r.truncated and r.output_bytes == 100_000_000
    assert "output truncated" in r.output and len(r.output) < 2 * sandbox.limits.output_cap
    assert (rss_after - rss_before) < 50_000  # KiB: the host never held the 100 MB
    assert sandbox.exec("echo ok").output == "ok\n"


def test_files_roundtrip_upload(sandbox, tmp_path):
    sandbox.write_file("a/b/c.txt", "héllo\n")
    assert sandbox.read_file("a/b/c.txt") == "héllo\n".encode()
    with pytest.raises(FileNotFoundError):
        sandbox.read_file("missing.txt")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("X = 1\n")
    sandbox.upload(tmp_path, sandbox.workdir + "/up")
    assert sandbox.exec("cat up/pkg/m.py").output == "X = 1\n"


def test_snapshot_restore_and_fork_are_independent(sandbox):
    sandbox.write_file("state.txt", "v1")
    snap = sandbox.snapshot()
    sandbox.write_file("state.txt", "v2")
    child = sandbox.fork()
    try:
        assert child.read_file("state.txt") == b"v2"
        child.write_file("state.txt", "child")
        assert sandbox.read_file("state.txt") == b"v2"
    finally:
        child.close()
    sandbox.restore(snap)
    assert sandbox.read_file("state.txt") == b"v1"


def test_close_is_idempotent_and_closed_sandbox_refuses(sandbox):
    sandbox.close()
    sandbox.close()
    assert sandbox.closed
    with pytest.raises(SandboxError):
        sandbox.exec("true")


# ---- Docker-only: isolation, limits, faults ------------------------------------------

@pytest.mark.docker
def test_container_is_isolated_labelled_and_unprivileged(docker_sandbox):
    from contextrl.sandboxes.dockerclient import RUN_ID, docker_client

    info = docker_client().inspect_container(docker_sandbox.container_id)
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert info["Config"]["Labels"]["contextrl"] == "1" and info["Config"]["Labels"]["contextrl.run"] == RUN_ID
    assert info["HostConfig"]["PidsLimit"] == 128 and info["HostConfig"]["Memory"] == 256 * 2**20
    assert docker_sandbox.exec("id -u").output.strip() == "1000"
    assert docker_sandbox.exec("ls /sys/class/net").output.split() == ["lo"]
    r = docker_sandbox.exec("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)\"")
    assert r.exit_code != 0 and "unreachable" in r.output.lower()


@pytest.mark.docker
def test_fork_bomb_hits_pids_limit_and_sandbox_recovers(docker_sandbox):
    r = docker_sandbox.exec("bomb() { bomb | bomb & }; bomb; sleep 3; echo PIDS $(ps -e --no-headers | wc -l)", timeout=8)
    # the bomb really ran into the pids limit (fork failures), and the limit held
    assert "Resource temporarily unavailable" in r.output or "fork" in r.output.lower(), r.output[-500:]
    during = [int(line.split()[1]) for line in r.output.splitlines() if line.startswith("PIDS ")]
    assert all(n <= 128 for n in during)
    docker_sandbox.exec("pkill -9 -u 1000 -f bomb || true", timeout=30)
    after = int(docker_sandbox.exec("ps -e --no-headers | wc -l", timeout=30).output.strip())
    assert after <= 128
    assert docker_sandbox.exec("echo survived", timeout=30).output.endswith("survived\n")


@pytest.mark.docker
def test_memory_hog_is_killed_by_the_limit(docker_sandbox):
    r = docker_sandbox.exec("python3 -c \"x = bytearray(1024 * 1024 * 1024); print('ALLOC' + 'DONE')\"", timeout=60)
    assert r.exit_code == 137 and "ALLOCDONE" not in r.output
    assert docker_sandbox.exec("echo ok").output == "ok\n"


@pytest.mark.docker
def test_container_killed_from_outside_raises_sandbox_error_and_close_works(docker_sandbox):
    subprocess.run(["docker", "kill", docker_sandbox.container_id], check=True, capture_output=True)
    with pytest.raises(SandboxError) as ei:
        docker_sandbox.exec("echo hi", timeout=5)
    assert "sandbox" in str(ei.value)
    docker_sandbox.close()
    docker_sandbox.close()


def test_docker_daemon_unreachable_gives_one_clear_error(monkeypatch):
    from contextrl.sandboxes import dockerclient, resolve_backend
    from contextrl.sandboxes.docker import DockerSandbox, DockerSandboxConfig

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    dockerclient.reset_client()
    try:
        with pytest.raises(DockerUnavailableError) as ei:
            DockerSandbox(DockerSandboxConfig(image="whatever"))
        msg = str(ei.value)
        assert "dockerd" in msg and "local" in msg and "/nonexistent/docker.sock" in msg
        with pytest.warns(UserWarning, match="LocalSandbox"):
            assert resolve_backend("auto") == "local"
    finally:
        dockerclient.reset_client()


def test_local_sandbox_states_what_it_does_not_isolate():
    from contextrl.sandboxes import local

    assert "network" in local.NOT_ISOLATED and "network" in (local.__doc__ or "")
