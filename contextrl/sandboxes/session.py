"""Host side of the session protocol: typed requests over any byte transport.

The same `session_server.py` runs inside a Docker container (over an attached exec
stream) and on the host for `LocalSandbox` (over subprocess pipes), so the two backends
share command semantics exactly: persistent cwd, timeouts that kill the command's
processes and keep the shell, capped output with a visible marker.
"""

from __future__ import annotations

import abc
import base64
import json
import os
import select
import socket
import struct
import subprocess
import threading
import time
from importlib import resources
from typing import Any

from contextrl.errors import SandboxError
from contextrl.sandboxes.base import ExecResult

SERVER_SOURCE = resources.files("contextrl.sandboxes").joinpath("assets/session_server.py").read_bytes()


class Transport(abc.ABC):
    """A bidirectional byte stream to one session server."""

    @abc.abstractmethod
    def send(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def recv_line(self, timeout: float) -> bytes:
        """One newline-terminated line; raise SandboxError on EOF or timeout."""

    @abc.abstractmethod
    def close(self) -> None: ...


class PipeTransport(Transport):
    """The server as a local subprocess."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self._buf = bytearray()
        self._fd = proc.stdout.fileno()  # type: ignore[union-attr]

    def send(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError, ValueError) as e:
            raise SandboxError(f"session server is gone ({e})") from e

    def recv_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"session server did not answer within {timeout:.0f}s")
            r, _, _ = select.select([self._fd], [], [], left)
            if r:
                chunk = os.read(self._fd, 1 << 20)
                if not chunk:
                    raise SandboxError(f"session server exited (code {self.proc.poll()})")
                self._buf += chunk

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass


class DockerStreamTransport(Transport):
    """An attached, non-TTY `docker exec` stream: stdin raw, stdout multiplexed in frames
    of an 8-byte header (stream id, 3 zero bytes, big-endian length) plus payload."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._raw = bytearray()
        self._out = bytearray()
        self._err = bytearray()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise SandboxError(f"lost the connection to the sandbox session ({e})") from e

    def _pump(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout as e:
            raise TimeoutError from e
        except OSError as e:
            raise SandboxError(f"lost the connection to the sandbox session ({e})") from e
        if not chunk:
            raise SandboxError("the sandbox session ended (container stopped or killed?)")
        self._raw += chunk
        while len(self._raw) >= 8:
            stream, size = self._raw[0], struct.unpack(">I", self._raw[4:8])[0]
            if len(self._raw) < 8 + size:
                break
            payload = self._raw[8 : 8 + size]
            del self._raw[: 8 + size]
            (self._out if stream == 1 else self._err).extend(payload)
            if len(self._err) > 1 << 16:
                del self._err[: len(self._err) - (1 << 16)]

    def recv_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            i = self._out.find(b"\n")
            if i >= 0:
                line = bytes(self._out[: i + 1])
                del self._out[: i + 1]
                return line
            try:
                self._pump(deadline)
            except TimeoutError:
                raise SandboxError(f"sandbox session did not answer within {timeout:.0f}s") from None

    @property
    def stderr_tail(self) -> str:
        return self._err[-2000:].decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class SessionClient:
    """Typed calls to one session server. Thread-safe: one request in flight at a time."""

    GRACE_S = 30.0

    def __init__(self, transport: Transport, ready_timeout: float = 60.0):
        self.transport = transport
        self._lock = threading.Lock()
        hello = self._read(ready_timeout)
        if not hello.get("ready"):
            raise SandboxError(f"session server sent an unexpected greeting: {hello}")
        self.server_pid = hello.get("pid")

    def _read(self, timeout: float) -> dict[str, Any]:
        line = self.transport.recv_line(timeout)
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            raise SandboxError(f"session server sent a malformed reply: {line[:200]!r}") from e

    def _call(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self._lock:
            self.transport.send(json.dumps(req).encode() + b"\n")
            return self._read(timeout)

    def exec(self, command: str, timeout: float, cap: int) -> ExecResult:
        resp = self._call({"op": "exec", "cmd": command, "timeout": timeout, "cap": cap}, timeout + self.GRACE_S)
        if not resp.get("ok"):
            raise SandboxError(f"exec failed inside the sandbox: {resp.get('error')}")
        return ExecResult(
            exit_code=int(resp["exit_code"]), output=resp["output"], timed_out=bool(resp["timed_out"]),
            truncated=bool(resp["truncated"]), duration_s=float(resp["duration_s"]),
            output_bytes=int(resp["output_bytes"]), session_restarted=bool(resp["session_restarted"]),
        )

    def read_file(self, path: str, timeout: float = 60.0) -> bytes:
        resp = self._call({"op": "read", "path": path}, timeout)
        if not resp.get("ok"):
            _raise_os(resp, path)
        return base64.b64decode(resp["data"])

    def write_file(self, path: str, data: bytes, mode: int, timeout: float = 60.0) -> None:
        resp = self._call({"op": "write", "path": path, "data": base64.b64encode(data).decode(), "mode": mode}, timeout)
        if not resp.get("ok"):
            _raise_os(resp, path)

    def ping(self, timeout: float = 10.0) -> bool:
        return bool(self._call({"op": "ping"}, timeout).get("ok"))

    def close(self) -> None:
        self.transport.close()


def _raise_os(resp: dict[str, Any], path: str) -> None:
    err = resp.get("errno")
    msg = resp.get("error", "unknown error")
    if err == 2:
        raise FileNotFoundError(2, msg, path)
    if err == 21:
        raise IsADirectoryError(21, msg, path)
    if err == 13:
        raise PermissionError(13, msg, path)
    if err is not None:
        raise OSError(err, msg, path)
    raise SandboxError(f"{path}: {msg}")
