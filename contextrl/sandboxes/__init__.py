"""Where commands run: Docker containers (default) or a local temp directory (fallback)."""

from __future__ import annotations

import warnings
from typing import Literal

from contextrl.sandboxes.base import ExecResult, Sandbox, SandboxLimits, Snapshot
from contextrl.sandboxes.dockerclient import docker_available
from contextrl.sandboxes.local import LocalSandbox
from contextrl.sandboxes.pool import PoolConfig, SandboxPool

SandboxKind = Literal["auto", "docker", "local"]

__all__ = ["ExecResult", "Sandbox", "SandboxLimits", "Snapshot", "LocalSandbox", "SandboxPool", "PoolConfig",
           "DockerSandbox", "DockerSandboxConfig", "resolve_backend", "make_sandbox_factory"]


def __getattr__(name: str):
    if name in ("DockerSandbox", "DockerSandboxConfig"):
        from contextrl.sandboxes import docker

        return getattr(docker, name)
    raise AttributeError(name)


def resolve_backend(kind: SandboxKind) -> Literal["docker", "local"]:
    """`auto` means Docker when a daemon answers, else local with a warning."""
    if kind == "docker":
        from contextrl.sandboxes.dockerclient import docker_client

        docker_client()  # raises DockerUnavailableError with instructions
        return "docker"
    if kind == "local":
        return "local"
    if kind != "auto":
        from contextrl.errors import ConfigError

        raise ConfigError(f"sandbox={kind!r}: choose 'auto', 'docker' or 'local'")
    if docker_available():
        return "docker"
    warnings.warn("no Docker daemon answers; falling back to LocalSandbox, which does NOT isolate the network, "
                  "the filesystem or resources. Start dockerd or pass sandbox='local' to silence this.", stacklevel=2)
    return "local"


def make_sandbox_factory(kind: SandboxKind = "auto", image: str | None = None, limits: SandboxLimits | None = None,
                         uid: int | None = 1000, workdir: str = "/workspace"):
    """A zero-argument callable that creates a sandbox of the resolved backend."""
    backend = resolve_backend(kind)
    limits = limits or SandboxLimits()
    if backend == "local":
        return lambda: LocalSandbox(limits)
    from contextrl.sandboxes.docker import DockerSandbox, DockerSandboxConfig
    from contextrl.sandboxes.image import ensure_default_image

    cfg = DockerSandboxConfig(image=image or ensure_default_image(), limits=limits, uid=uid, workdir=workdir)
    return lambda: DockerSandbox(cfg)
