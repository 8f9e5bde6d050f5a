"""Gymnasium coding environments whose episodes run in sandboxes."""

from contextrl.envs.coding import CodingEnv
from contextrl.envs.registration import ENV_IDS, make, register_envs, registered_ids
from contextrl.envs.task import Provenance, Task

__all__ = ["CodingEnv", "Task", "Provenance", "make", "register_envs", "registered_ids", "ENV_IDS"]
