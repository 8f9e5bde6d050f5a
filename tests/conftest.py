"""Shared fixtures. Docker policy: tests marked `docker` skip without a daemon, except
under CI=true, where a missing daemon fails them (a green run must mean Docker ran)."""

from __future__ import annotations

import os

import pytest

from contextrl.sandboxes.dockerclient import RUN_ID, docker_available

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(config, items):
    if docker_available():
        return
    for item in items:
        if "docker" in item.keywords:
            if IN_CI:
                item.fixturenames.append("_require_docker")
            else:
                item.add_marker(pytest.mark.skip(reason="no Docker daemon (start one or run `make test`)"))


@pytest.fixture
def _require_docker():
    pytest.fail("CI=true but no Docker daemon answers: tests marked `docker` must run in CI")


@pytest.fixture(scope="session")
def default_image():
    from contextrl.sandboxes.image import ensure_default_image

    return ensure_default_image()


@pytest.fixture
def docker_sandbox(default_image):
    from contextrl.sandboxes import SandboxLimits
    from contextrl.sandboxes.docker import DockerSandbox, DockerSandboxConfig

    sb = DockerSandbox(DockerSandboxConfig(image=default_image, limits=SandboxLimits(memory_mb=256, pids=128, default_timeout_s=30)))
    yield sb
    sb.close()


@pytest.fixture(params=["local", "docker"])
def sandbox(request):
    """The same behavioural tests run on both backends."""
    from contextrl.sandboxes import LocalSandbox, SandboxLimits

    if request.param == "local":
        sb = LocalSandbox(SandboxLimits(default_timeout_s=30))
        yield sb
        sb.close()
    else:
        if not docker_available():
            if IN_CI:
                pytest.fail("CI=true but no Docker daemon answers")
            pytest.skip("no Docker daemon")
        yield request.getfixturevalue("docker_sandbox")


def pytest_sessionfinish(session, exitstatus):
    """The whole suite must leave no container of this run behind."""
    if not docker_available():
        return
    from contextrl.sandboxes.admin import list_containers

    import time

    for _ in range(20):
        left = list_containers(run=RUN_ID)
        if not left:
            return
        time.sleep(0.5)
    session.config._contextrl_leaks = left  # type: ignore[attr-defined]
    print(f"\nLEAK: {len(left)} contextrl container(s) of run {RUN_ID} remain: {[c.name for c in left]}")
    session.exitstatus = 1
