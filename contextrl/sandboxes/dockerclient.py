"""One shared Docker API client per process, with an error that says what to do when the
daemon is down, and the label scheme every contextrl container and image carries."""

from __future__ import annotations

import os
import threading
import uuid

from contextrl.errors import DockerUnavailableError

LABEL = "contextrl"
LABEL_RUN = "contextrl.run"
LABEL_KIND = "contextrl.kind"
RUN_ID = os.environ.get("CONTEXTRL_RUN_ID") or uuid.uuid4().hex[:12]
"""Identifies this process's containers, so a sweep can target one run."""

HOW_TO_START = (
    "Start a daemon (as root on Debian: `apt-get install docker.io && dockerd --bridge=none "
    "--iptables=false --ip-forward=false --ip-masq=false &`, or `make docker-up`), set DOCKER_HOST "
    "if it listens elsewhere, or choose the local sandbox (no isolation): `sandbox: local` in the "
    "config, `--sandbox local` on the command line, or `LocalSandbox()` in code."
)

_lock = threading.Lock()
_client = None


def docker_client(timeout: int = 120):
    """The process-wide low-level `docker.APIClient`; raises DockerUnavailableError."""
    global _client
    with _lock:
        if _client is not None:
            return _client
        try:
            import docker
        except ImportError as e:  # pragma: no cover - docker is a hard dependency
            raise DockerUnavailableError("the `docker` Python package is missing: pip install docker") from e
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        try:
            api = docker.APIClient(base_url=host, version="auto", timeout=timeout, max_pool_size=64)
            api.ping()
        except Exception as e:  # noqa: BLE001 - any failure here means "no daemon"
            raise DockerUnavailableError(f"no Docker daemon answers at {host} ({type(e).__name__}: {e}). {HOW_TO_START}") from None
        _client = api
        return api


def docker_available() -> bool:
    try:
        docker_client()
        return True
    except DockerUnavailableError:
        return False


def reset_client() -> None:
    """Forget the cached client (tests that point DOCKER_HOST elsewhere)."""
    global _client
    with _lock:
        _client = None
