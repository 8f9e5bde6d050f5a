"""BugFix-v0 manifests, source fetching, and materialising manifests into `Task`s.

The repository ships no third-party code. Each project has a small JSON manifest in
`contextrl/envs/data/bugfix-v0/<project>.json`: the PyPI sdist (name, version,
sha256), the workspace file list, the baseline-passing tests, and the kept mutations
(file, byte range, original and replacement text, operator, FAIL_TO_PASS, problem
statement). `fetch_sources` downloads the sdists with pip into a cache and unpacks
them; `load_bugfix_tasks` reads the cache, applies each mutation (checking the original
text is really at its offset) and returns ready `Task`s.

Manifest format (version 1)::

    {"format": 1, "project": "inflection", "version": "0.5.1",
     "sdist": "inflection-0.5.1.tar.gz", "sha256": "...", "license": "MIT",
     "test_command": "python3 -m pytest -rA -q -p no:cacheprovider",
     "files": ["inflection/__init__.py", "test_inflection.py", ...],
     "baseline_passed": ["test_inflection.py::test_camelize[...]", ...],
     "generator": {...}, "yields": {...},
     "tasks": [{"id": "inflection-0.5.1/mut-1a2b3c4d",
                "mutation": {"file", "start_byte", "end_byte", "original", "replacement", "operator", "line"},
                "fail_to_pass": [...], "pass_to_pass_files": ["test_inflection.py"],
                "problem_statement": "..."}]}

PASS_TO_PASS is stored compactly: every baseline-passing test of `pass_to_pass_files`
except the task's FAIL_TO_PASS (the same rule the generator used to compute it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from contextrl.conditions import Mutation
from contextrl.envs.task import DEFAULT_TEST_COMMAND, Provenance, Task
from contextrl.errors import TaskError

MANIFEST_FORMAT = 1
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "bugfix-v0"
"""Where the committed manifests live."""
CACHE_SUBDIR = "bugfix-v0"
FETCH_HINT = "run `contextrl tasks fetch` (or `python -m contextrl.envs.bugfix fetch`) to download them"
_STAMP = ".contextrl-sha256"
# Paths (relative to the unpacked sdist) never copied into a task workspace.
_EXCLUDED_PARTS = frozenset({"docs", "doc", "documentation", ".github", "__pycache__", ".git"})
_EXCLUDED_NAMES = frozenset({"PKG-INFO", ".gitignore", ".gitattributes", ".readthedocs.yaml", "MANIFEST.in"})
_MAX_FILE_BYTES = 512 * 1024


@dataclass(frozen=True)
class ManifestEntry:
    """One kept mutant: the mutation, its tests and its issue text."""

    id: str
    mutation: Mutation
    fail_to_pass: tuple[str, ...]
    pass_to_pass_files: tuple[str, ...]
    problem_statement: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "mutation": self.mutation.to_dict(), "fail_to_pass": list(self.fail_to_pass),
            "pass_to_pass_files": list(self.pass_to_pass_files), "problem_statement": self.problem_statement,
        }


@dataclass(frozen=True)
class BugfixManifest:
    """A project's sdist pin plus its kept mutants."""

    project: str
    version: str
    sdist: str
    """File name of the sdist as pip saves it."""
    sha256: str
    license: str
    test_command: str
    files: tuple[str, ...]
    """Workspace files (relative to the unpacked sdist root)."""
    baseline_passed: tuple[str, ...]
    """Tests that pass on the unmutated project (as parsed from pytest -rA)."""
    tasks: tuple[ManifestEntry, ...]
    generator: Mapping[str, Any] = field(default_factory=dict)
    """Generator parameters (seed, max_mutants, globs)."""
    yields: Mapping[str, Any] = field(default_factory=dict)
    """Tried/kept counts per operator and rejections per reason."""

    @property
    def key(self) -> str:
        return f"{self.project}-{self.version}"

    def pass_to_pass(self, entry: ManifestEntry) -> tuple[str, ...]:
        """Baseline-passing tests of the entry's P2P files, minus its FAIL_TO_PASS."""
        files, f2p = set(entry.pass_to_pass_files), set(entry.fail_to_pass)
        return tuple(t for t in self.baseline_passed if t.split("::", 1)[0] in files and t not in f2p)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT, "project": self.project, "version": self.version, "sdist": self.sdist,
            "sha256": self.sha256, "license": self.license, "test_command": self.test_command,
            "generator": dict(self.generator), "yields": dict(self.yields), "files": list(self.files),
            "baseline_passed": list(self.baseline_passed), "tasks": [t.to_dict() for t in self.tasks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "manifest") -> "BugfixManifest":
        if data.get("format") != MANIFEST_FORMAT:
            raise TaskError(f"{where}: unsupported manifest format {data.get('format')!r} (expected {MANIFEST_FORMAT})")
        try:
            tasks = tuple(
                ManifestEntry(
                    id=t["id"], mutation=Mutation.from_dict(t["mutation"]), fail_to_pass=tuple(t["fail_to_pass"]),
                    pass_to_pass_files=tuple(t.get("pass_to_pass_files", ())), problem_statement=t["problem_statement"],
                )
                for t in data["tasks"]
            )
            return cls(
                project=data["project"], version=data["version"], sdist=data["sdist"], sha256=data["sha256"],
                license=data.get("license", ""), test_command=data.get("test_command", DEFAULT_TEST_COMMAND),
                files=tuple(data["files"]), baseline_passed=tuple(data["baseline_passed"]), tasks=tasks,
                generator=data.get("generator", {}), yields=data.get("yields", {}),
            )
        except (KeyError, TypeError) as exc:
            raise TaskError(f"{where}: malformed BugFix manifest ({type(exc).__name__}: {exc})") from exc

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def load_manifests(data_dir: str | Path | None = None, projects: Iterable[str] | None = None) -> list[BugfixManifest]:
    """Every manifest in `data_dir` (default: the shipped ones), sorted by project name."""
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    wanted = set(projects) if projects is not None else None
    out = []
    for path in sorted(root.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TaskError(f"cannot read BugFix manifest {path}: {exc}") from exc
        m = BugfixManifest.from_dict(data, where=str(path))
        if wanted is None or m.project in wanted or m.key in wanted:
            out.append(m)
    if wanted is not None and not out:
        raise TaskError(f"no BugFix manifest for {sorted(wanted)} in {root}")
    return out


def default_cache_dir() -> Path:
    """`$CONTEXTRL_CACHE`, else `~/.cache/contextrl`."""
    env = os.environ.get("CONTEXTRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "contextrl"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_dir(cache_dir: str | Path, project: str, version: str) -> Path:
    """Where the unpacked sdist of `project==version` lives in the cache."""
    return Path(cache_dir) / CACHE_SUBDIR / "src" / f"{project}-{version}"


def download_sdist(project: str, version: str, dest: str | Path) -> Path:
    """`pip download --no-deps --no-binary :all: project==version` into `dest`; returns the file."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in dest.iterdir()}
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check", "-d", str(dest), f"{project}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TaskError(f"pip download of {project}=={version} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    norm = project.replace("-", "_").lower()
    cands = sorted(p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip"))
                   and p.name.lower().replace("-", "_").startswith(f"{norm}_{version}".lower()))
    new = [p for p in cands if p.name not in before] or cands
    if not new:
        raise TaskError(f"pip download of {project}=={version} produced no sdist in {dest}:\n{proc.stdout[-2000:]}")
    return new[0]


def unpack_sdist(archive: str | Path, dest: str | Path, sha256: str) -> Path:
    """Unpack a .tar.gz sdist into `dest` (its single top-level folder stripped), atomically."""
    dest = Path(dest)
    if (dest / _STAMP).is_file() and (dest / _STAMP).read_text().strip() == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        tops = [p for p in tmp.iterdir()]
        root = tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp
        (root / _STAMP).write_text(sha256 + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        root.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_project(project: str, version: str, sha256: str | None, cache_dir: str | Path | None = None,
                  sdist: str | None = None) -> tuple[Path, str, str]:
    """Make sure `project==version` is downloaded, verified and unpacked.

    Returns (source dir, sha256, sdist file name). With `sha256=None` (a new project
    being generated) the downloaded file's hash is returned instead of checked.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    src = source_dir(cache, project, version)
    if sha256 and sdist and (src / _STAMP).is_file() and (src / _STAMP).read_text().strip() == sha256:
        return src, sha256, sdist
    sdists = cache / CACHE_SUBDIR / "sdists"
    archive = sdists / sdist if sdist else None
    if archive is None or not archive.is_file() or (sha256 and sha256_file(archive) != sha256):
        archive = download_sdist(project, version, sdists)
    digest = sha256_file(archive)
    if sha256 and digest != sha256:
        archive.unlink(missing_ok=True)
        raise TaskError(f"sha256 mismatch for {archive.name}: expected {sha256}, got {digest}; the file was removed")
    return unpack_sdist(archive, src, digest), digest, archive.name


def fetch_sources(cache_dir: str | Path | None = None, projects: Iterable[str] | None = None,
                  data_dir: str | Path | None = None) -> list[Path]:
    """Download, verify (sha256) and unpack every manifest's sdist into the cache; idempotent.

    Returns the unpacked source directories. Needs network access to PyPI (pip).
    """
    out = []
    for m in load_manifests(data_dir, projects):
        src, _, _ = fetch_project(m.project, m.version, m.sha256, cache_dir, sdist=m.sdist)
        out.append(src)
    return out


def select_files(src: str | Path) -> list[str]:
    """Text files of an unpacked sdist that belong in a task workspace (sorted, POSIX paths)."""
    root = Path(src)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or p.is_symlink() or p.name in _EXCLUDED_NAMES or p.name == _STAMP:
            continue
        if _EXCLUDED_PARTS.intersection(rel.parts[:-1]) or any(s.endswith(".egg-info") for s in rel.parts):
            continue
        if p.suffix in (".pyc", ".pyo", ".so") or p.stat().st_size > _MAX_FILE_BYTES:
            continue
        try:
            p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        out.append(rel.as_posix())
    return out


def read_files(src: str | Path, files: Sequence[str]) -> dict[str, str]:
    """Read the listed files (UTF-8, newlines kept) from an unpacked sdist; TaskError if one is missing."""
    root = Path(src)
    out: dict[str, str] = {}
    for rel in files:
        try:
            out[rel] = (root / rel).read_bytes().decode("utf-8")
        except FileNotFoundError as exc:
            raise TaskError(f"{rel} is missing from {root}; the cache is incomplete, {FETCH_HINT}") from exc
    return out


def build_task(manifest: BugfixManifest, entry: ManifestEntry, files: Mapping[str, str]) -> Task:
    """Apply one entry's mutation to the project's files and wrap it as a `Task`."""
    m = entry.mutation
    if m.file not in files:
        raise TaskError(f"task {entry.id}: mutated file {m.file!r} is not among the project's files")
    original = files[m.file]
    if not m.matches(original):
        found = original.encode()[m.start_byte:m.end_byte].decode(errors="replace")
        raise TaskError(
            f"task {entry.id}: expected {m.original!r} at bytes {m.start_byte}..{m.end_byte} of {m.file}, "
            f"found {found!r}; the manifest does not match {manifest.project}=={manifest.version}"
        )
    mutated = m.apply(original)
    return Task(
        id=entry.id,
        problem_statement=entry.problem_statement,
        files={**files, m.file: mutated},
        test_command=manifest.test_command,
        fail_to_pass=entry.fail_to_pass,
        pass_to_pass=manifest.pass_to_pass(entry),
        reference_patch=m.diff(original, reverse=True),
        provenance=Provenance(
            source="bugfix-generator", origin=f"{manifest.project}=={manifest.version}", license=manifest.license,
            details={"operator": m.operator, "file": m.file, "line": m.line, "start_byte": m.start_byte,
                     "end_byte": m.end_byte, "original": m.original, "replacement": m.replacement,
                     "sdist_sha256": manifest.sha256},
        ),
    )


def tasks_from_manifest(manifest: BugfixManifest, src: str | Path) -> list[Task]:
    """Every task of one manifest, from its unpacked sdist at `src`."""
    files = read_files(src, manifest.files)
    return [build_task(manifest, e, files) for e in manifest.tasks]


def load_bugfix_tasks(cache_dir: str | Path | None = None, projects: Iterable[str] | None = None,
                      data_dir: str | Path | None = None) -> list[Task]:
    """Materialise the BugFix-v0 tasks from the shipped manifests and the source cache.

    Raises TaskError when a project's sources are not in the cache (with how to fetch
    them), or when a mutation's original text is not at its recorded offset.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tasks: list[Task] = []
    for m in load_manifests(data_dir, projects):
        src = source_dir(cache, m.project, m.version)
        stamp = src / _STAMP
        if not stamp.is_file():
            raise TaskError(f"BugFix-v0 sources for {m.project}=={m.version} are not in the cache {cache}; {FETCH_HINT}")
        if stamp.read_text().strip() != m.sha256:
            raise TaskError(f"cached {m.project}=={m.version} in {src} has a different sha256 than the manifest; {FETCH_HINT}")
        tasks.extend(tasks_from_manifest(m, src))
    return tasks
