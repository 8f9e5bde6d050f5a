"""SWE-style task instances (SWE-bench, SWE-Gym, SWE-smith, R2E-Gym) as `Task` records.

The four datasets share one idea (an issue, a repository at a commit inside a Docker
image, tests that must flip) but spell their rows differently:

- SWE-bench / SWE-Gym: `instance_id, repo, base_commit, patch, test_patch,
  problem_statement, FAIL_TO_PASS, PASS_TO_PASS` (test lists often JSON-encoded
  strings). The image is derived from the instance id: SWE-bench's
  `swebench/sweb.eval.x86_64.<id, "__" -> "_1776_">`, SWE-Gym's
  `xingyaoww/sweb.eval.x86_64.<id, "__" -> "_s_">`.
- SWE-smith: the same keys plus `image_name`; `repo` is the `swesmith/<owner>__<repo>.<hash>`
  mirror, there is no `test_patch`, and `patch` is the patch that *introduces* the
  bug. The task therefore applies that patch in `setup_commands` (and commits it, so
  the agent's diff starts clean) and its `reference_patch` is the reverse.
- R2E-Gym: `repo_name, docker_image, commit_hash, parsed_commit_content,
  problem_statement, expected_output_json`; hidden tests live in the image
  (`/root/r2e_tests`, run by `/root/run_tests.sh`) and test ids follow R2E's own log
  parser ("Class.test"), so scoring them needs that parser.

These tasks run only where the named image exists; parsing and validation always work.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any, Mapping

from contextrl.envs.task import Provenance, Task
from contextrl.errors import TaskError

__all__ = ["SWE_TEST_COMMAND", "detect_swe_flavour", "load_swe_instances", "reverse_patch", "task_from_swe_row"]

SWE_WORKDIR = "/testbed"
SWE_TEST_COMMAND = "PATH=/opt/miniconda3/envs/testbed/bin:$PATH python -m pytest -rA -p no:cacheprovider"
"""pytest inside the images' `testbed` conda env (SWE-bench, SWE-Gym and SWE-smith images)."""
R2E_TEST_COMMAND = "ln -sfn /root/r2e_tests r2e_tests; bash /root/run_tests.sh"
FLAVOURS = ("swe-bench", "swe-gym", "swe-smith", "r2e-gym")
# The 11 repositories of SWE-Gym (Pan et al. 2024); SWE-bench's eval splits use other ones.
_SWE_GYM_REPOS = frozenset({
    "getmoto/moto", "python/mypy", "pandas-dev/pandas", "pydantic/pydantic", "iterative/dvc",
    "conan-io/conan", "dask/dask", "project-monai/monai", "facebookresearch/hydra",
    "bokeh/bokeh", "modin-project/modin",
})
_KEEP_IN_DETAILS = ("version", "created_at", "environment_setup_commit")


def detect_swe_flavour(row: Mapping[str, Any], hint: str = "") -> tuple[str, str]:
    """Guess which dataset a row comes from; returns (flavour, how it was decided).

    Row shape decides R2E-Gym (`docker_image` + `repo_name`/`expected_output_json`) and
    SWE-smith (`image_name` or a `swesmith/` repo). SWE-bench and SWE-Gym rows have the
    same shape, so `hint` (usually the file name) and then SWE-Gym's repository list
    decide between them; pass an explicit source to `task_from_swe_row` to be certain.
    """
    if "docker_image" in row and any(k in row for k in ("repo_name", "expected_output_json", "parsed_commit_content")):
        return "r2e-gym", "shape"
    repo = str(row.get("repo") or "")
    if "swesmith" in str(row.get("image_name") or "") or repo.startswith("swesmith/"):
        return "swe-smith", "shape"
    h = hint.lower().replace("_", "-")
    for flavour, needles in (("swe-smith", ("swe-smith", "swesmith")), ("swe-gym", ("swe-gym", "swegym")),
                             ("r2e-gym", ("r2e",)), ("swe-bench", ("swe-bench", "swebench"))):
        if any(n in h for n in needles):
            return flavour, "file name"
    if repo.lower() in _SWE_GYM_REPOS:
        return "swe-gym", "repo"
    return "swe-bench", "default"


def reverse_patch(patch: str) -> str:
    """Invert a unified (git) diff: what it adds it removes, old and new paths swap.

    Handles hunk headers, `---`/`+++` and `diff --git` paths, `index` lines, new/deleted
    file modes, renames and "\\ No newline at end of file" markers.
    """
    out: list[str] = []
    swaps = {"new file mode": "deleted file mode", "deleted file mode": "new file mode",
             "rename from": "rename to", "rename to": "rename from",
             "copy from": "copy to", "copy to": "copy from", "old mode": "new mode", "new mode": "old mode"}
    lines = patch.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = line[4:], lines[i + 1][4:]
            out += ["--- " + _swap_prefix(new, "b/", "a/"), "+++ " + _swap_prefix(old, "a/", "b/")]
            i += 2
            continue
        if line.startswith("@@"):
            head, sep, rest = line[2:].partition("@@")
            parts = head.split()
            if len(parts) == 2 and parts[0].startswith("-") and parts[1].startswith("+"):
                line = f"@@ -{parts[1][1:]} +{parts[0][1:]} @@{rest}"
        elif line.startswith("diff --git "):
            a, _, b = line[len("diff --git "):].rstrip("\n").partition(" b/")
            line = f"diff --git a/{b} b/{a[2:] if a.startswith('a/') else a}\n" if b else line
        elif line.startswith("index ") and ".." in line:
            ids, _, mode = line[6:].rstrip("\n").partition(" ")
            lhs, _, rhs = ids.partition("..")
            line = f"index {rhs}..{lhs}{' ' + mode if mode else ''}\n"
        elif line[:1] in "+-":
            # A run of changed lines: flip the signs, keep removals before additions.
            run: list[list[str]] = []
            while i < len(lines) and (lines[i][:1] in "+-" or (lines[i].startswith("\\") and run)):
                if lines[i].startswith("\\"):
                    run[-1].append(lines[i])
                elif not (lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
                    run.append([("-" if lines[i][0] == "+" else "+") + lines[i][1:]])
                else:
                    break
                i += 1
            out += [ln for grp in run if grp[0][0] == "-" for ln in grp] + [ln for grp in run if grp[0][0] == "+" for ln in grp]
            continue
        else:
            for key, val in swaps.items():
                if line.startswith(key + " "):
                    line = val + line[len(key):]
                    break
        out.append(line)
        i += 1
    return "".join(out)


def _swap_prefix(path: str, old: str, new: str) -> str:
    return new + path[len(old):] if path.startswith(old) else path


def task_from_swe_row(row: Mapping[str, Any], *, source: str | None = None, origin: str = "", where: str = "") -> Task:
    """Convert one SWE-bench / SWE-Gym / SWE-smith / R2E-Gym instance row into a `Task`.

    `source` names the flavour ("swe-bench", "swe-gym", "swe-smith", "r2e-gym");
    None detects it with `detect_swe_flavour`. `origin` goes into the provenance (it
    defaults to the instance id) and `where` (e.g. "file.json, row 3") prefixes errors.
    Raises `TaskError` naming the row and the missing or malformed field.
    """
    loc = where or "SWE instance row"
    if not isinstance(row, Mapping):
        raise TaskError(f"{loc}: expected a JSON object (one task instance), got {type(row).__name__}. "
                        "Fix: each row must be an object with instance_id, repo, base_commit, problem_statement, ...")
    _reject_non_instance(row, loc)
    hint = f"{origin} {where}"
    flavour, how = (source, "given") if source else detect_swe_flavour(row, hint)
    if flavour not in FLAVOURS:
        raise TaskError(f"{loc}: unknown source {flavour!r}. Fix: use one of {', '.join(FLAVOURS)}")
    if flavour == "r2e-gym":
        return _task_from_r2e_row(row, loc, origin, how)
    iid = _req_str(row, "instance_id", loc)
    loc = f"{loc} ({iid})" if iid not in loc else loc
    required = ["repo", "problem_statement", "patch"] + (["base_commit"] if flavour != "swe-smith" else [])
    repo, problem, patch, *base = (_req_str(row, k, loc) for k in required)
    f2p = _test_list(row, "FAIL_TO_PASS", loc, required=True)
    p2p = _test_list(row, "PASS_TO_PASS", loc, required=False)
    details: dict[str, Any] = {k: row[k] for k in _KEEP_IN_DETAILS if isinstance(row.get(k), str) and row[k]}
    details["flavour_from"] = how
    image = _opt_str(row, "image", loc) or _opt_str(row, "image_name", loc) or _opt_str(row, "docker_image", loc)
    setup: tuple[str, ...] = ()
    reference = patch
    if flavour == "swe-smith":
        # SWE-smith's `patch` creates the bug: apply and commit it, the fix is its reverse.
        image = image or (f"swesmith.x86_64.{repo.split('/', 1)[1]}" if repo.startswith("swesmith/") else None)
        if not image:
            raise TaskError(f"{loc}: missing field `image_name`. Fix: give the SWE-smith image "
                            "(e.g. `swesmith.x86_64.<owner>__<repo>.<hash>`) in `image_name`")
        setup = (_apply_and_commit(patch, "contextrl: apply SWE-smith bug patch"),)
        reference = reverse_patch(patch)
        details["bug_patch_applied_in_setup"] = True
    elif not image:
        token = "_s_" if flavour == "swe-gym" else "_1776_"
        ns = "xingyaoww" if flavour == "swe-gym" else "swebench"
        image = f"{ns}/sweb.eval.x86_64.{iid.replace('__', token)}".lower()
        details["image_derived"] = True
    try:
        return Task(
            id=iid, problem_statement=problem, files={}, repo=repo, base_commit=base[0] if base else _opt_str(row, "base_commit", loc),
            image=image, workdir=SWE_WORKDIR, setup_commands=setup, test_command=SWE_TEST_COMMAND,
            fail_to_pass=f2p, pass_to_pass=p2p, test_patch=_opt_str(row, "test_patch", loc) or "",
            reference_patch=reference, provenance=Provenance(source=flavour, origin=origin or iid, details=details),
        )
    except TaskError as e:
        raise TaskError(f"{loc}: {e}") from e


def _task_from_r2e_row(row: Mapping[str, Any], loc: str, origin: str, how: str) -> Task:
    repo = _req_str(row, "repo_name", loc)
    image = _req_str(row, "docker_image", loc)
    problem = _req_str(row, "problem_statement", loc)
    commit = _opt_str(row, "commit_hash", loc) or image.rpartition(":")[2]
    iid = _opt_str(row, "instance_id", loc) or f"r2e-gym/{repo}-{commit[:12]}"
    expected = row.get("expected_output_json")
    if isinstance(expected, str):
        try:
            expected = json.loads(expected)
        except json.JSONDecodeError as e:
            raise TaskError(f"{loc}: field `expected_output_json` is not valid JSON ({e.msg}). "
                            "Fix: it must map test names to statuses, e.g. '{\"TestX.test_y\": \"PASSED\"}'") from e
    if "FAIL_TO_PASS" in row:
        f2p = _test_list(row, "FAIL_TO_PASS", loc, required=True)
    elif isinstance(expected, Mapping):
        f2p = tuple(sorted(str(k) for k, v in expected.items() if v == "PASSED"))
    else:
        raise TaskError(f"{loc}: missing field `expected_output_json` (or `FAIL_TO_PASS`). "
                        "Fix: R2E-Gym rows need the expected test statuses to be scored")
    if not f2p:
        raise TaskError(f"{loc}: `expected_output_json` lists no PASSED test. Fix: the row needs at least one test the fix makes pass")
    base = None
    parsed = row.get("parsed_commit_content")
    if isinstance(parsed, str):
        try:
            parsed = json.loads(parsed)
        except json.JSONDecodeError:
            parsed = None
    if isinstance(parsed, Mapping) and isinstance(parsed.get("old_commit_hash"), str):
        base = parsed["old_commit_hash"]
    details = {"flavour_from": how, "test_id_style": "r2e", "commit_hash": commit,
               "expected_statuses": dict(expected) if isinstance(expected, Mapping) else {}}
    return Task(
        id=iid, problem_statement=problem, files={}, repo=repo, base_commit=base, image=image, workdir=SWE_WORKDIR,
        test_command=R2E_TEST_COMMAND, fail_to_pass=f2p, pass_to_pass=_test_list(row, "PASS_TO_PASS", loc, required=False),
        reference_patch=_opt_str(row, "patch", loc) or "", provenance=Provenance(source="r2e-gym", origin=origin or iid, details=details),
    )


def load_swe_instances(path: str | Path, *, source: str | None = None) -> list[Task]:
    """Load SWE-style instance rows from a JSON file (a list or one object) or a JSONL file.

    Each row becomes a `Task` via `task_from_swe_row` (flavour detected per row unless
    `source` is given). Identical duplicate rows are kept once; two different rows with
    the same instance id raise `TaskError`, as does any malformed row (the message names
    the file, the row index and the field).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read SWE instance file ({e}). Fix: check the path and that it is UTF-8 JSON") from e
    rows: list[tuple[str, Any]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"line {n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}: line {n}: invalid JSON ({e.msg}, column {e.colno}). "
                                    "Fix: a .jsonl file holds one JSON object per line") from e
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}. "
                            "Fix: the file must hold a JSON list of instance objects or one object") from e
        items = data if isinstance(data, list) else [data]
        rows = [(f"row {i}", r) for i, r in enumerate(items)]
    if not rows:
        raise TaskError(f"{path}: no instance rows. Fix: add at least one task instance")
    tasks: list[Task] = []
    seen: dict[str, tuple[int, Any]] = {}
    for i, (label, row) in enumerate(rows):
        where = f"{path}, row {i}" + (f" ({label})" if label.startswith("line") else "")
        task = task_from_swe_row(row, source=source, origin=f"{path}#{i}", where=where)
        if task.id in seen:
            first, first_row = seen[task.id]
            if first_row == row:
                continue
            raise TaskError(f"{where}: instance id {task.id!r} already used by row {first} with different content. "
                            "Fix: instance ids must be unique within a file")
        seen[task.id] = (i, row)
        tasks.append(task)
    return tasks


def _reject_non_instance(row: Mapping[str, Any], loc: str) -> None:
    if any(k in row for k in ("problem_statement", "FAIL_TO_PASS", "fail_to_pass", "docker_image")):
        return
    keys = ", ".join(sorted(map(str, row))[:8])
    if "messages" in row:
        kind = "a chat transcript (e.g. SWE-smith fine-tuning data), not a task instance"
        fix = "load it as trajectory data; task instance rows carry problem_statement, FAIL_TO_PASS, patch"
    elif "model_patch" in row:
        kind = "a prediction (model_patch), not a task instance"
        fix = "load the dataset the predictions were made for instead"
    elif any(k in row for k in ("history", "trajectory")):
        kind = "an agent trajectory / evaluation output, not a task instance"
        fix = "import it with the trajectory importers"
    else:
        kind = "not a task instance (no problem_statement or FAIL_TO_PASS)"
        fix = "give rows with instance_id, repo, base_commit, problem_statement, patch, FAIL_TO_PASS"
    raise TaskError(f"{loc}: row with fields [{keys}] is {kind}. Fix: {fix}")


def _req_str(row: Mapping[str, Any], key: str, loc: str) -> str:
    val = row.get(key)
    if val is None or val == "":
        raise TaskError(f"{loc}: missing required field `{key}`. Fix: add a non-empty `{key}` string to the row")
    if not isinstance(val, str):
        raise TaskError(f"{loc}: field `{key}` must be a string, got {type(val).__name__}. Fix: write it as a string")
    return val


def _opt_str(row: Mapping[str, Any], key: str, loc: str) -> str | None:
    val = row.get(key)
    if val is None or val == "":
        return None
    if not isinstance(val, str):
        raise TaskError(f"{loc}: field `{key}` must be a string, got {type(val).__name__}. Fix: write it as a string")
    return val


def _test_list(row: Mapping[str, Any], key: str, loc: str, *, required: bool) -> tuple[str, ...]:
    val = row.get(key, row.get(key.lower()))
    if val is None:
        if required:
            raise TaskError(f"{loc}: missing required field `{key}`. Fix: list the tests the fix makes pass, "
                            'as a JSON list or a JSON-encoded string: ["tests/test_x.py::test_y"]')
        return ()
    if isinstance(val, str):
        try:
            val = json.loads(val)
        except json.JSONDecodeError as e:
            raise TaskError(f"{loc}: field `{key}` is a string but not JSON ({e.msg}). "
                            f'Fix: give a list of test ids, e.g. ["tests/test_x.py::test_y"]') from e
    if not isinstance(val, list) or not all(isinstance(t, str) for t in val):
        raise TaskError(f"{loc}: field `{key}` must be a list of test-id strings, got {type(val).__name__}. "
                        'Fix: e.g. ["tests/test_x.py::test_y"]')
    if required and not val:
        raise TaskError(f"{loc}: field `{key}` is empty. Fix: list at least one test the fix makes pass")
    return tuple(val)


def _apply_and_commit(patch: str, message: str) -> str:
    """A shell command applying `patch` (embedded as a here-document) in the cwd and committing it."""
    body = patch if patch.endswith("\n") else patch + "\n"
    delim = "CONTEXTRL_PATCH_" + hashlib.sha256(body.encode()).hexdigest()[:12]
    commit = (f"git add -A && git -c user.name=contextrl -c user.email=contextrl@localhost "
              f"commit -q --no-verify -m {shlex.quote(message)}")
    return f"git apply --whitespace=nowarn - <<'{delim}' && {commit}\n{body}{delim}"
