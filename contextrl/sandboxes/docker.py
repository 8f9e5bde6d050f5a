"""`DockerSandbox`: one long-lived container per sandbox, one persistent session inside it.

Deployment (where): a container with `network_mode="none"`, memory/CPU/pids limits,
all capabilities dropped but the few the session server needs, `no-new-privileges`,
docker's init as PID 1 to reap orphans, and the `contextrl` labels.
Runtime (how): `session_server.py`, started once through an attached `docker exec`;
commands then cost one pipe round trip. Commands run as a non-root user (uid 1000 by
default) in a persistent bash; the server (root inside the container, no capabilities
beyond those listed) kills a timed-out command's processes and keeps the shell.
"""

from __future__ import annotations

import atexit
import io
import os
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from contextrl.errors import SandboxError
from contextrl.sandboxes.base import ExecResult, Sandbox, SandboxLimits, Snapshot
from contextrl.sandboxes.dockerclient import LABEL, LABEL_KIND, LABEL_RUN, RUN_ID, docker_client
from contextrl.sandboxes.session import SERVER_SOURCE, DockerStreamTransport, SessionClient

SERVER_PATH = "/opt/contextrl/session_server.py"
CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"]


@dataclass(frozen=True)
class DockerSandboxConfig:
    """Where and how a Docker sandbox runs."""

    image: str | None = None
    """Image to run; None means the default contextrl sandbox image (built on demand)."""
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    """Memory, CPU, pids, timeout and output limits."""
    uid: int | None = 1000
    """User id commands run as; None runs them as root (some task images need it)."""
    workdir: str = "/workspace"
    """Working directory of the session; created (owned by `uid`) if missing."""
    python: str = "python3"
    """Interpreter inside the image that runs the session server."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Extra labels; `contextrl=1` and the run id are always added."""
    start_timeout_s: float = 60.0
    """How long the session server may take to come up."""


class _Live:
    """Registry of open sandboxes for the atexit backstop (no cleanup in __del__)."""

    lock = threading.Lock()
    sandboxes: set["DockerSandbox"] = set()
    image_refs: dict[str, int] = {}
    owned_images: set[str] = set()


def _close_all_at_exit() -> None:
    for sb in list(_Live.sandboxes):
        try:
            sb.close()
        except Exception:
            pass


atexit.register(_close_all_at_exit)


def _server_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("opt", "opt/contextrl"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        ti = tarfile.TarInfo(SERVER_PATH.lstrip("/"))
        ti.size, ti.mode = len(SERVER_SOURCE), 0o644
        tar.addfile(ti, io.BytesIO(SERVER_SOURCE))
    return buf.getvalue()


_SERVER_TAR = _server_tar()


class DockerSandbox(Sandbox):
    """A sandbox in its own container. Create with a config; use as a context manager."""

    backend = "docker"

    def __init__(self, config: DockerSandboxConfig | None = None, *, _owns_image: bool = False):
        self.config = config or DockerSandboxConfig()
        if self.config.image is None:
            from contextrl.sandboxes.image import ensure_default_image

            self.config = replace(self.config, image=ensure_default_image())
        self.workdir = self.config.workdir
        self.limits = self.config.limits
        self.id = uuid.uuid4().hex[:12]
        self.api = docker_client()
        self.container_id: str | None = None
        self._client: SessionClient | None = None
        self._closed = False
        self._snapshots: list[str] = []
        self._image = self.config.image
        with _Live.lock:
            if _owns_image:
                _Live.owned_images.add(self._image)
            _Live.sandboxes.add(self)
        t0 = time.perf_counter()
        try:
            self._start_container(self._image)
        except BaseException:
            self.close()
            raise
        self.cold_start_s = time.perf_counter() - t0

    # -- deployment -------------------------------------------------------------------
    def _start_container(self, image: str) -> None:
        lim = self.config.limits
        host_config = self.api.create_host_config(
            network_mode="none",
            mem_limit=f"{lim.memory_mb}m",
            memswap_limit=f"{lim.memory_mb}m",
            nano_cpus=int(lim.cpus * 1e9),
            pids_limit=lim.pids,
            init=True,
            cap_drop=["ALL"],
            cap_add=CAPS,
            security_opt=["no-new-privileges"],
        )
        labels = {LABEL: "1", LABEL_RUN: RUN_ID, LABEL_KIND: "sandbox", "contextrl.sandbox": self.id, **self.config.labels}
        try:
            c = self.api.create_container(
                image, command=["sleep", "infinity"], labels=labels, host_config=host_config,
                network_disabled=True, name=f"contextrl-{self.id}-{uuid.uuid4().hex[:4]}",
            )
        except Exception as e:  # noqa: BLE001
            raise SandboxError(f"could not create a container from image {image!r}: {e}") from e
        self.container_id = c["Id"]
        with _Live.lock:
            _Live.image_refs[image] = _Live.image_refs.get(image, 0) + 1
        self._image = image
        try:
            self.api.put_archive(self.container_id, "/", _SERVER_TAR)
            self.api.start(self.container_id)
            cmd = [self.config.python, "-u", SERVER_PATH, "--container", "--workdir", self.config.workdir]
            if self.config.uid is not None:
                cmd += ["--uid", str(self.config.uid)]
            ex = self.api.exec_create(self.container_id, cmd, stdin=True, stdout=True, stderr=True, tty=False, user="root")
            sock = self.api.exec_start(ex["Id"], socket=True)
            raw = getattr(sock, "_sock", sock)
            self._client = SessionClient(DockerStreamTransport(raw), ready_timeout=self.config.start_timeout_s)
        except SandboxError as e:
            raise SandboxError(f"sandbox {self.id}: session server did not start in image {image!r} ({e}); "
                               f"the image needs `{self.config.python}` and bash") from e
        except Exception as e:  # noqa: BLE001
            raise SandboxError(f"sandbox {self.id}: could not start container: {e}") from e

    def _remove_container(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.container_id is not None:
            try:
                self.api.remove_container(self.container_id, force=True, v=True)
            except Exception as e:  # noqa: BLE001
                if "No such container" not in str(e) and "is already in progress" not in str(e):
                    raise SandboxError(f"could not remove container {self.container_id[:12]}: {e}") from e
            self.container_id = None
            self._release_image(self._image)

    def _release_image(self, image: str) -> None:
        with _Live.lock:
            n = _Live.image_refs.get(image, 0) - 1
            _Live.image_refs[image] = max(0, n)
            owned = image in _Live.owned_images and n <= 0
            if owned:
                _Live.owned_images.discard(image)
        if owned:
            self._remove_image(image)

    def _remove_image(self, image: str) -> None:
        try:
            self.api.remove_image(image, force=False)
        except Exception:
            pass  # still used by another container; `contextrl sandbox prune` sweeps it

    # -- runtime ----------------------------------------------------------------------
    def _session(self) -> SessionClient:
        if self._closed:
            raise SandboxError(f"DockerSandbox {self.id} is closed")
        if self._client is None:
            raise SandboxError(f"DockerSandbox {self.id} has no session (its container failed earlier)")
        return self._client

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        try:
            return self._session().exec(command, timeout or self.limits.default_timeout_s, self.limits.output_cap)
        except SandboxError as e:
            raise SandboxError(f"sandbox {self.id}: {e}{self._death_note()}") from None

    def _death_note(self) -> str:
        if self.container_id is None:
            return ""
        try:
            st = self.api.inspect_container(self.container_id)["State"]
        except Exception:  # noqa: BLE001
            return " (container is gone)"
        if not st.get("Running"):
            return f" (container exited: code {st.get('ExitCode')}, OOMKilled={st.get('OOMKilled')})"
        return ""

    def read_file(self, path: str) -> bytes:
        return self._session().read_file(path)

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        self._session().write_file(path, data.encode() if isinstance(data, str) else data, mode)

    def upload(self, local_dir: str | Path, dest: str | None = None) -> None:
        dest = dest or self.workdir
        self._session()
        uid = self.config.uid or 0
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            def owned(ti: tarfile.TarInfo) -> tarfile.TarInfo:
                ti.uid = ti.gid = uid
                ti.uname = ti.gname = ""
                return ti
            tar.add(str(local_dir), arcname=".", filter=owned)
        self.exec(f"mkdir -p {dest!r}")
        try:
            self.api.put_archive(self.container_id, dest, buf.getvalue())
        except Exception as e:  # noqa: BLE001
            raise SandboxError(f"sandbox {self.id}: upload of {local_dir} to {dest} failed: {e}") from e

    def snapshot(self) -> Snapshot:
        self._session()
        try:
            img = self.api.commit(self.container_id, repository="contextrl-snapshot", tag=uuid.uuid4().hex[:12],
                                  conf={"Labels": {LABEL: "1", LABEL_RUN: RUN_ID, LABEL_KIND: "snapshot"}}, pause=True)
        except Exception as e:  # noqa: BLE001
            raise SandboxError(f"sandbox {self.id}: snapshot failed: {e}") from e
        ref = img["Id"]
        self._snapshots.append(ref)
        return Snapshot(backend="docker", ref=ref)

    def restore(self, snapshot: Snapshot) -> None:
        self._session()
        if snapshot.backend != "docker":
            raise SandboxError(f"cannot restore a {snapshot.backend!r} snapshot into a DockerSandbox")
        self._remove_container()
        self._start_container(snapshot.ref)

    def fork(self) -> "DockerSandbox":
        snap = self.snapshot()
        self._snapshots.remove(snap.ref)  # the fork owns it now
        return DockerSandbox(replace(self.config, image=snap.ref), _owns_image=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._remove_container()
        finally:
            with _Live.lock:
                _Live.sandboxes.discard(self)
            for ref in self._snapshots:
                with _Live.lock:
                    in_use = _Live.image_refs.get(ref, 0) > 0
                    if in_use:
                        _Live.owned_images.add(ref)  # the last container on it removes it
                if not in_use:
                    self._remove_image(ref)
            self._snapshots = []

    def __repr__(self) -> str:
        cid = (self.container_id or "-")[:12]
        return f"DockerSandbox(id={self.id}, container={cid}, image={self._image[:24]!r}, closed={self._closed})"
