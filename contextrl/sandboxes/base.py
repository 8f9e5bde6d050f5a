"""The sandbox boundary: typed records and the protocol every backend implements.

A *deployment* decides where a sandbox lives (a Docker container, a temp directory);
the *runtime* decides how commands run inside it (a persistent session process). The
`Sandbox` protocol below is what envs and the miner see; they never touch either.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_OUTPUT_CAP = 64 * 1024
TRUNCATION_MARKER = "\n[contextrl: output truncated: {dropped} of {total} bytes not shown]\n"


@dataclass(frozen=True)
class ExecResult:
    """What one command produced. Output is stdout and stderr interleaved, decoded as UTF-8."""

    exit_code: int
    """Exit status; 124 when the command was killed for exceeding its timeout, -1 when the
    sandbox failed before the command finished."""
    output: str
    """Combined stdout/stderr, capped; a truncation marker shows where bytes were dropped."""
    timed_out: bool = False
    """True when the timeout fired and the command's processes were killed."""
    truncated: bool = False
    """True when output exceeded the cap."""
    duration_s: float = 0.0
    """Wall time of the command inside the sandbox."""
    output_bytes: int = 0
    """How many bytes the command wrote in total (including dropped ones)."""
    session_restarted: bool = False
    """True when the shell had to be restarted (shell-level loop timed out, shell died);
    cwd is kept, shell variables are lost."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    """An opaque handle to a saved filesystem state of one sandbox backend."""

    backend: str
    ref: str
    """Backend-specific reference: a Docker image id, a directory path."""
    meta: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits applied to a sandbox. Enforced by Docker; advisory for LocalSandbox."""

    memory_mb: int = 2048
    """Hard memory limit (swap included) for everything in the sandbox."""
    cpus: float = 1.0
    """CPU quota in cores."""
    pids: int = 256
    """Maximum number of processes; stops fork bombs."""
    default_timeout_s: float = DEFAULT_TIMEOUT_S
    """Per-command timeout when `exec` gets none."""
    output_cap: int = DEFAULT_OUTPUT_CAP
    """Bytes of output kept per command; the rest is dropped and counted."""

    def __post_init__(self) -> None:
        from contextrl.errors import ConfigError

        if self.memory_mb < 64:
            raise ConfigError(f"SandboxLimits.memory_mb={self.memory_mb}: must be >= 64 (MiB)")
        if self.cpus <= 0:
            raise ConfigError(f"SandboxLimits.cpus={self.cpus}: must be > 0")
        if self.pids < 16:
            raise ConfigError(f"SandboxLimits.pids={self.pids}: must be >= 16")
        if self.default_timeout_s <= 0:
            raise ConfigError("SandboxLimits.default_timeout_s must be > 0 seconds")
        if self.output_cap < 1024:
            raise ConfigError(f"SandboxLimits.output_cap={self.output_cap}: must be >= 1024 bytes")


class Sandbox(abc.ABC):
    """A place to run shell commands and move files, isolated to the degree its backend can.

    Paths are absolute inside the sandbox, or relative to `workdir`. Use as a context
    manager; `close()` is idempotent. Every method raises `SandboxError` when the sandbox
    itself failed (not when a command merely exits non-zero).
    """

    backend: str = "abstract"
    workdir: str = "/workspace"

    @abc.abstractmethod
    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        """Run a shell command in the persistent session (cwd persists between calls)."""

    @abc.abstractmethod
    def read_file(self, path: str) -> bytes:
        """Return a file's bytes; raise FileNotFoundError when it does not exist."""

    @abc.abstractmethod
    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace a file (parents created), owned by the sandbox user."""

    @abc.abstractmethod
    def upload(self, local_dir: str | Path, dest: str | None = None) -> None:
        """Copy a local directory's contents into `dest` (default: workdir)."""

    @abc.abstractmethod
    def snapshot(self) -> Snapshot:
        """Save the filesystem state; restore or fork from it later."""

    @abc.abstractmethod
    def restore(self, snapshot: Snapshot) -> None:
        """Return this sandbox to a saved state (the session restarts)."""

    @abc.abstractmethod
    def fork(self) -> "Sandbox":
        """A new, independent sandbox with the same filesystem state as this one now."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every resource; safe to call more than once."""

    _closed: bool = False

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    def is_alive(self) -> bool:
        """A cheap health check: the session answers a builtin."""
        try:
            return self.exec("true", timeout=10).exit_code == 0
        except Exception:
            return False

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
