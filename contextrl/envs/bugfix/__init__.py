"""`contextrl/BugFix-v0`: bug-fix tasks made by flipping conditions in real PyPI projects.

No third-party code is committed: `fetch_sources` downloads the pinned sdists into a
cache and `load_bugfix_tasks` rebuilds the tasks from the shipped manifests. The
generator that made those manifests (`generate_tasks`, `generate_manifest`) works on
any pure-Python project with a pytest suite.
"""

from contextrl.envs.bugfix.catalog import (
    BugfixManifest,
    ManifestEntry,
    default_cache_dir,
    fetch_sources,
    load_bugfix_tasks,
    load_manifests,
)
from contextrl.envs.bugfix.build import PROJECTS, cli_generate, generate_manifest
from contextrl.envs.bugfix.generate import GeneratedMutant, GenerationReport, generate_tasks

__all__ = [
    "PROJECTS", "BugfixManifest", "GeneratedMutant", "cli_generate", "GenerationReport", "ManifestEntry", "default_cache_dir", "fetch_sources",
    "generate_manifest", "generate_tasks", "load_bugfix_tasks", "load_manifests",
]
