"""`LocalSandbox`: the Sandbox protocol in a temporary directory, for machines without Docker.

What it does NOT isolate: the network, the rest of the filesystem (commands can read
and write anything the current user can), CPU, memory and process limits (advisory
only), and other processes of the user. It keeps command semantics identical to
`DockerSandbox` by running the same session server as a local subprocess. It is picked
automatically only when no Docker daemon answers, and then with a warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from contextrl.errors import SandboxError
from contextrl.sandboxes.base import ExecResult, Sandbox, SandboxLimits, Snapshot
from contextrl.sandboxes.session import SERVER_SOURCE, PipeTransport, SessionClient

NOT_ISOLATED = "network, host filesystem outside the workdir, CPU/memory/pids limits, other processes of this user"


class LocalSandbox(Sandbox):
    """A sandbox rooted at a fresh temp directory; `workdir` is that directory."""

    backend = "local"

    def __init__(self, limits: SandboxLimits | None = None, root: str | Path | None = None, _copy_from: Path | None = None):
        self.limits = limits or SandboxLimits()
        self.id = uuid.uuid4().hex[:12]
        self._root = Path(tempfile.mkdtemp(prefix=f"contextrl-{self.id}-", dir=root))
        self.workdir = str(self._root / "workspace")
        if _copy_from is not None:
            shutil.copytree(_copy_from, self.workdir, symlinks=True)
        else:
            os.makedirs(self.workdir)
        self._snapshots: list[Path] = []
        self._closed = False
        self._client: SessionClient | None = None
        self._start()

    def _start(self) -> None:
        server = self._root / "session_server.py"
        server.write_bytes(SERVER_SOURCE)
        tmp = self._root / "tmp"
        tmp.mkdir(exist_ok=True)
        # `python3` in the sandbox is the interpreter contextrl runs under (so a venv's pytest is there);
        # TMPDIR is private to this sandbox.
        env = dict(os.environ, TMPDIR=str(tmp), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        proc = subprocess.Popen(
            [sys.executable, "-u", str(server), "--workdir", self.workdir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.workdir,
            start_new_session=True, env=env,
        )
        self._client = SessionClient(PipeTransport(proc), ready_timeout=30)

    def _path(self, path: str) -> str:
        return path if path.startswith("/") else os.path.join(self.workdir, path)

    def _check(self) -> SessionClient:
        if self._closed or self._client is None:
            raise SandboxError(f"LocalSandbox {self.id} is closed")
        return self._client

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        return self._check().exec(command, timeout or self.limits.default_timeout_s, self.limits.output_cap)

    def read_file(self, path: str) -> bytes:
        return self._check().read_file(self._path(path))

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        self._check().write_file(self._path(path), data.encode() if isinstance(data, str) else data, mode)

    def upload(self, local_dir: str | Path, dest: str | None = None) -> None:
        self._check()
        shutil.copytree(local_dir, self._path(dest or self.workdir), dirs_exist_ok=True, symlinks=True)

    def snapshot(self) -> Snapshot:
        self._check()
        snap = self._root / f"snap-{len(self._snapshots)}"
        shutil.copytree(self.workdir, snap, symlinks=True)
        self._snapshots.append(snap)
        return Snapshot(backend="local", ref=str(snap))

    def restore(self, snapshot: Snapshot) -> None:
        client = self._check()
        if snapshot.backend != "local":
            raise SandboxError(f"cannot restore a {snapshot.backend!r} snapshot into a LocalSandbox")
        client.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.copytree(snapshot.ref, self.workdir, symlinks=True)
        self._start()

    def fork(self) -> "LocalSandbox":
        self._check()
        return LocalSandbox(self.limits, root=self._root.parent, _copy_from=Path(self.workdir))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            self._client.close()
        shutil.rmtree(self._root, ignore_errors=True)
