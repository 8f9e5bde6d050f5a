"""Importers (and exporters) between real coding-agent trajectory formats and `Trajectory`.

Formats (see each module's docstring for what is mapped and what is dropped):
- ``openhands_v0``: OpenHands v0 event lists, session event stores, eval/resolver output.jsonl;
- ``openhands_v1``: OpenHands v1 SDK conversations (events/ dirs, event files, events.jsonl);
- ``mini_swe_agent``: mini-swe-agent ``.traj.json`` (v1, v2 text and tool-calling) and message lists;
- ``swe_agent``: SWE-agent ``.traj`` (0.x, 1.x, history-only);
- ``contextrl``: this package's own JSONL (`contextrl.trajectory.read_trajectories`).

    from contextrl.importers import import_path, export_file
    report = import_path("runs/")            # recursive; bad files are reported, not fatal
    export_file(report.trajectories[0], "mini_swe_agent", "out.traj.json")

Every imported trajectory has ``outcome="imported"`` and ``source=<format name>``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from contextrl.errors import TrajectoryFormatError
from contextrl.importers._common import FORMAT_NAMES, fail, repo_from_instance_id
from contextrl.importers.detect import detect_format, iter_units, unit_dir_format
from contextrl.importers.mini_swe_agent import export_mini, import_mini
from contextrl.importers.openhands_v0 import export_v0, import_v0
from contextrl.importers.openhands_v1 import import_v1
from contextrl.importers.swe_agent import import_swe_agent
from contextrl.trajectory import Trajectory, read_trajectories, write_trajectories

__all__ = ["FORMATS", "EXPORT_FORMATS", "ImportReport", "detect_format", "import_file", "import_path", "export_file"]


def _import_contextrl(path: Path) -> list[Trajectory]:
    return list(read_trajectories(path))


def _export_contextrl(traj: Trajectory, path: Path) -> None:
    write_trajectories(path, [traj])


_IMPORTERS: dict[str, Callable[[Path], list[Trajectory]]] = {
    "openhands_v0": import_v0,
    "openhands_v1": import_v1,
    "mini_swe_agent": import_mini,
    "swe_agent": import_swe_agent,
    "contextrl": _import_contextrl,
}
_EXPORTERS: dict[str, Callable[[Trajectory, Path], None]] = {
    "openhands_v0": export_v0,
    "mini_swe_agent": export_mini,
    "contextrl": _export_contextrl,
}
FORMATS: tuple[str, ...] = tuple(_IMPORTERS)
"""Format names `import_file` accepts."""
EXPORT_FORMATS: tuple[str, ...] = tuple(_EXPORTERS)
"""Format names `export_file` can write (a round trip preserves the step fields they carry)."""


@dataclass
class ImportReport:
    """Outcome of `import_path`: what was imported and which units failed, and why."""

    trajectories: list[Trajectory] = field(default_factory=list)
    """Every trajectory imported, in discovery order."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(path, error message) per file or conversation directory that could not be imported."""
    n_files: int = 0
    """Files and conversation directories attempted (imported + failed)."""
    formats: dict[str, int] = field(default_factory=dict)
    """Units imported per format name."""

    @property
    def n_imported_files(self) -> int:
        """Units that imported without error."""
        return self.n_files - len(self.failures)

    @property
    def n_failed(self) -> int:
        """Units that failed."""
        return len(self.failures)

    @property
    def n_trajectories(self) -> int:
        """Trajectories imported."""
        return len(self.trajectories)

    @property
    def n_steps(self) -> int:
        """Steps over all imported trajectories."""
        return sum(len(t.steps) for t in self.trajectories)

    def summary(self) -> dict[str, Any]:
        """Counts as a JSON-ready dict."""
        return {"files": self.n_files, "imported_files": self.n_imported_files, "failed_files": self.n_failed,
                "trajectories": self.n_trajectories, "steps": self.n_steps, "formats": dict(self.formats)}


def import_file(path: str | Path, fmt: str | None = None) -> list[Trajectory]:
    """Import one file (or one conversation directory) as trajectories.

    `fmt` forces a format; by default it is detected from the content (`detect_format`).
    Raises `TrajectoryFormatError` naming the file, the field and the expected format when the
    content is malformed, unknown, or does not match `fmt`.
    """
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in _IMPORTERS:
        raise TrajectoryFormatError(f"{path}: unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not path.exists():
        raise fail(path, "$", fmt, "no such file or directory")
    try:
        trajs = _IMPORTERS[fmt](path)
    except TrajectoryFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a shape no check anticipated
        raise fail(path, "$", fmt, f"malformed content ({type(e).__name__}: {e})") from e
    return trajs if fmt == "contextrl" else [_with_repo(t) for t in trajs]


def _with_repo(t: Trajectory) -> Trajectory:
    """Fill metadata["repo"] from a SWE-bench style instance id when the source did not name it."""
    repo = None if t.metadata.get("repo") else repo_from_instance_id(t.task_id)
    return replace(t, metadata={**t.metadata, "repo": repo}) if repo else t


def import_path(path: str | Path) -> ImportReport:
    """Import a file, a conversation directory, or every unit under a directory (recursive).

    A unit that fails is recorded in ``report.failures`` and the import goes on. Files that are
    not ``.json``/``.jsonl``/``.traj`` and hidden entries are skipped without being counted.
    """
    path = Path(path)
    if not path.exists():
        raise TrajectoryFormatError(f"{path}: no such file or directory")
    units = [path] if path.is_file() or unit_dir_format(path) else list(iter_units(path))
    report, formats = ImportReport(), Counter()
    for unit in tqdm(units, desc="importing trajectories", unit="file", disable=len(units) < 200):
        report.n_files += 1
        try:
            fmt = detect_format(unit)
            report.trajectories.extend(import_file(unit, fmt))
            formats[fmt] += 1
        except TrajectoryFormatError as e:
            report.failures.append((str(unit), str(e)))
    report.formats = dict(formats)
    return report


def export_file(traj: Trajectory, fmt: str, path: str | Path) -> Path:
    """Write one trajectory in format `fmt` (one of `EXPORT_FORMATS`); returns the path.

    ``mini_swe_agent`` and ``openhands_v0`` round-trip the step fields those formats carry
    (tool, args, observation, exit code, thought, raw action, errors, timeouts).
    """
    if fmt not in _EXPORTERS:
        raise TrajectoryFormatError(f"cannot export to {fmt!r}: supported export formats are {', '.join(EXPORT_FORMATS)}"
                                    + (" (SWE-agent and OpenHands v1 are import-only)" if fmt in FORMAT_NAMES else ""))
    path = Path(path)
    _EXPORTERS[fmt](traj, path)
    return path
