"""Building the shipped BugFix-v0 manifests: pinned projects and `generate_manifest`.

A manifest is generated on exactly the files a task workspace will hold (the sdist
filtered by `catalog.select_files`, staged in a temp dir), in the sandbox that will
score it: the default contextrl Docker image (Debian python3 3.11, pytest 7.2), because
pytest's test ids (hence FAIL_TO_PASS / PASS_TO_PASS) can differ between versions.
"""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from contextrl.envs.bugfix import catalog
from contextrl.envs.bugfix.generate import DEFAULT_EXCLUDE, GenerationReport, generate_tasks
from contextrl.envs.task import DEFAULT_TEST_COMMAND
from contextrl.sandboxes.base import Sandbox

_BOLTONS_MODULES = ("cacheutils", "dictutils", "formatutils", "ioutils", "iterutils", "jsonutils", "listutils",
                    "mathutils", "queueutils", "setutils", "strutils", "tableutils", "timeutils", "urlutils")

PROJECTS: dict[str, dict[str, Any]] = {
    "toolz": {
        "version": "1.2.0", "license": "BSD-3-Clause", "max_mutants": 50,
        "mutate": ["toolz/*.py"], "exclude": ["toolz/sandbox/*", "toolz/_signatures.py"],
    },
    "boltons": {
        "version": "26.2.0", "license": "BSD-3-Clause", "max_mutants": 70,
        "mutate": [f"boltons/{m}.py" for m in _BOLTONS_MODULES], "exclude": [],
    },
}
"""Pinned projects and their generation settings (modules with focused, fast tests)."""


def generate_manifest(
    project: str,
    version: str,
    sandbox_factory: Callable[[], Sandbox],
    *,
    cache_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    license: str = "",
    max_mutants: int = 100,
    seed: int = 0,
    test_command: str = DEFAULT_TEST_COMMAND,
    task_test_command: str = DEFAULT_TEST_COMMAND,
    mutate: Sequence[str] = ("**/*.py", "*.py"),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    max_fail_to_pass: int = 20,
    workers: int = 1,
    progress: bool = True,
    generated_in: str = "",
) -> tuple[Path, GenerationReport]:
    """Fetch `project==version` from PyPI, generate mutants, and write `<out_dir>/<project>.json`.

    `test_command` runs during generation (e.g. with a specific interpreter);
    `task_test_command` is what the tasks record (the sandbox image's `python3`).
    `generated_in` is a free-text note on the environment (recorded in the manifest).
    """
    src, digest, sdist = catalog.fetch_project(project, version, None, cache_dir)
    files = catalog.select_files(src)
    with tempfile.TemporaryDirectory(prefix=f"contextrl-stage-{project}-") as tmp:
        stage = Path(tmp) / f"{project}-{version}"
        for rel in files:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, stage / rel)
        report = generate_tasks(
            stage, sandbox_factory, max_mutants=max_mutants, seed=seed, test_command=test_command, project=project,
            task_prefix=f"{project}-{version}", mutate=mutate, exclude=exclude, max_fail_to_pass=max_fail_to_pass,
            workers=workers, progress=progress,
        )
    manifest = catalog.BugfixManifest(
        project=project, version=version, sdist=sdist, sha256=digest, license=license,
        test_command=task_test_command, files=tuple(files), baseline_passed=report.baseline_passed,
        tasks=tuple(catalog.ManifestEntry(g.id, g.mutation, g.fail_to_pass, g.pass_to_pass_files, g.problem_statement)
                    for g in report.kept),
        generator={"seed": seed, "max_mutants": max_mutants, "mutate": list(mutate), "exclude": list(exclude),
                   "max_fail_to_pass": max_fail_to_pass, "generated_in": generated_in,
                   "generator": "contextrl.envs.bugfix.generate"},
        yields=report.yields(),
    )
    out = Path(out_dir) if out_dir is not None else catalog.DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{project}.json"
    manifest.write(path)
    return path, report


def sandbox_for(kind: Literal["auto", "docker", "local"] = "auto",
                python: str | None = None) -> tuple[Callable[[], Sandbox], str, str]:
    """(sandbox factory, generation test command, description) for a sandbox kind.

    "docker" runs in the default contextrl image with its `python3`; "local" runs in a
    `LocalSandbox` with `python` (default: this interpreter); "auto" picks docker when a
    daemon answers, else local with a warning.
    """
    if kind == "auto":
        from contextrl.sandboxes.dockerclient import docker_available

        kind = "docker" if docker_available() else "local"
        if kind == "local":
            warnings.warn("no Docker daemon: generating with LocalSandbox; test ids may differ from the image's pytest",
                          stacklevel=2)
    if kind == "docker":
        from contextrl.sandboxes.docker import DockerSandbox, DockerSandboxConfig
        from contextrl.sandboxes.image import ensure_default_image

        image = ensure_default_image()
        return functools.partial(DockerSandbox, DockerSandboxConfig(image=image)), DEFAULT_TEST_COMMAND, \
            f"docker image {image}"
    from contextrl.sandboxes.local import LocalSandbox

    py = python or sys.executable
    return LocalSandbox, f"{shlex.quote(py)} -m pytest -rA -q -p no:cacheprovider", f"local {py}"


def cli_generate(args: Any) -> int:
    """`contextrl tasks generate`: regenerate the shipped manifests, or generate for one project.

    `args.project`: None (every project in `PROJECTS`, written to the package data or
    `args.out` as a directory), "NAME==VERSION" (a PyPI sdist; manifest to `args.out` or
    the package data), or a local project directory (tasks written as JSONL of
    `Task.to_dict()` rows to `args.out`, default `<dir>.tasks.jsonl`). Also reads
    `max_mutants`, `seed`, `sandbox` and `cache_dir`.
    """
    from contextrl.envs.bugfix.catalog import read_files
    from contextrl.envs.task import Provenance, Task

    factory, command, where = sandbox_for(getattr(args, "sandbox", "auto") or "auto")
    project, out = getattr(args, "project", None), getattr(args, "out", None)
    seed, max_mutants = getattr(args, "seed", 0), getattr(args, "max_mutants", None)
    if project and Path(project).is_dir():
        root = Path(project).resolve()
        report = generate_tasks(root, factory, max_mutants=max_mutants or 100, seed=seed, test_command=command)
        files = read_files(root, catalog.select_files(root))
        dest = Path(out) if out else root.with_name(root.name + ".tasks.jsonl")
        with open(dest, "w", encoding="utf-8") as fh:
            for g in report.kept:
                task = Task(id=g.id, problem_statement=g.problem_statement,
                            files={**files, g.mutation.file: g.mutation.apply(files[g.mutation.file])},
                            fail_to_pass=g.fail_to_pass, pass_to_pass=g.pass_to_pass, reference_patch=g.reference_patch,
                            provenance=Provenance("bugfix-generator", str(root), details=g.mutation.to_dict()))
                fh.write(json.dumps(task.to_dict()) + "\n")
        print(json.dumps({"project": str(root), "tasks": str(dest), **report.yields()}))
        return 0
    if project:
        name, _, version = project.partition("==")
        if not version:
            from contextrl.errors import ConfigError

            raise ConfigError(f"--project {project!r}: give a project directory or NAME==VERSION (a PyPI sdist)")
        spec = PROJECTS.get(name, {}) if PROJECTS.get(name, {}).get("version") == version else {}
        targets = [(name, version, spec, Path(out) if out else None)]
    else:
        targets = [(n, sp["version"], sp, Path(out) / f"{n}.json" if out else None) for n, sp in sorted(PROJECTS.items())]
    for name, version, spec, dest in targets:
        path, report = generate_manifest(
            name, version, factory, cache_dir=getattr(args, "cache_dir", None),
            out_dir=dest.parent if dest else None, license=spec.get("license", ""),
            max_mutants=spec.get("max_mutants") or max_mutants or 100, seed=seed, test_command=command,
            mutate=spec.get("mutate", ("**/*.py", "*.py")), exclude=DEFAULT_EXCLUDE + tuple(spec.get("exclude", ())),
            generated_in=where,
        )
        if dest and path != dest:
            path = path.replace(dest)
        print(json.dumps({"project": name, "manifest": str(path), **report.yields()}))
    return 0
