"""Error hierarchy: one root, one subclass per boundary that can fail.

Each error names the boundary it crossed so a caller can decide whether a failure is
the policy's (bad action: data, recorded on the trajectory) or the infrastructure's
(sandbox died, daemon down: masked out of training, counted in metrics).
"""

from __future__ import annotations


class ContextRLError(Exception):
    """Root of every error contextrl raises on purpose."""


class ConfigError(ContextRLError, ValueError):
    """A configuration or spec value is invalid; the message names the field and the fix."""


class SandboxError(ContextRLError):
    """The sandbox boundary failed: the container died, a command could not be delivered."""


class DockerUnavailableError(SandboxError):
    """No Docker daemon answers; the message says how to start one or pick the local sandbox."""


class TaskError(ContextRLError):
    """A task could not be loaded, validated, or set up in a sandbox."""


class TrajectoryFormatError(ContextRLError, ValueError):
    """A trajectory file is malformed or of an unknown format."""


class MiningError(ContextRLError):
    """The pair miner could not produce or verify a pair."""


class UnknownEnvError(ContextRLError, KeyError):
    """An env id is not registered; the message suggests the closest ids."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""
