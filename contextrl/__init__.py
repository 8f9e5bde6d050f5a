"""contextrl: context-aware RL (ContextRL, arXiv 2606.17053) for coding agents and VLMs.

Importing the package registers the Gymnasium env ids (`contextrl/HumanEval-v0`,
`contextrl/BugFix-v0`, `contextrl/Task-v0`).
"""

from contextrl.envs.registration import make, register_envs, registered_ids
from contextrl.errors import (
    ConfigError,
    ContextRLError,
    DockerUnavailableError,
    MiningError,
    SandboxError,
    TaskError,
    TrajectoryFormatError,
    UnknownEnvError,
)

__version__ = "0.1.0"

register_envs()

__all__ = ["make", "register_envs", "registered_ids", "ContextRLError", "ConfigError", "SandboxError",
           "DockerUnavailableError", "TaskError", "TrajectoryFormatError", "MiningError", "UnknownEnvError"]
