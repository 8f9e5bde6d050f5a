"""Issue text for an injected bug, written only from what pytest printed.

The statement names the failing tests and quotes a few `E ` lines of their tracebacks
(assertion diffs, exception messages): what a user would paste into a bug report. It
never mentions the mutated file, line or operator.
"""

from __future__ import annotations

import re
from typing import Sequence

_SECTION_RE = re.compile(r"^_{3,} (.+?) _{3,}$")
_SHORT_RE = re.compile(r"^FAILED (\S+) - (.+)$")
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


def failure_excerpts(log: str, max_lines: int = 6, width: int = 160) -> dict[str, list[str]]:
    """Map a failure-section title ("test_x[p]", "TestC.test_y") to its first `E ` lines.

    Tests without `E ` lines fall back to the message of their `FAILED id - message`
    summary line, keyed the same way.
    """
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in log.splitlines():
        m = _SECTION_RE.match(line)
        if m:
            current = out.setdefault(m.group(1), [])
            continue
        if line.startswith("=") and line.rstrip().endswith("="):
            current = None
        elif current is not None and line.startswith("E ") and len(current) < max_lines:
            current.append(_clip(line.rstrip(), width))
        short = _SHORT_RE.match(line)
        if short:
            key = _title(short.group(1))
            if not out.get(key):
                out[key] = [_clip("E   " + short.group(2).strip(), width)]
    return out


def _clip(text: str, width: int) -> str:
    text = _ADDRESS_RE.sub(" at 0x...", text)  # object addresses change run to run
    return text if len(text) <= width else text[: width - 3] + "..."


def _title(test_id: str) -> str:
    """pytest's failure-section title for a test id: "f.py::C::t[x]" -> "C.t[x]"."""
    return test_id.split("::", 1)[-1].replace("::", ".")


def problem_statement(project: str, fail_to_pass: Sequence[str], log: str, max_tests: int = 8, max_excerpts: int = 2) -> str:
    """Issue text naming the failing tests with short pytest excerpts (not the bug's location)."""
    excerpts = failure_excerpts(log)
    n = len(fail_to_pass)
    names = list(fail_to_pass[:max_tests])
    lines = [f"{n} test{'s' if n != 1 else ''} in the {project} test suite {'fail' if n != 1 else 'fails'} "
             "after a recent change to the library code:", ""]
    lines += [f"- {t}" for t in names] + ([f"- ... and {n - len(names)} more"] if n > len(names) else [])
    shown = 0
    for t in fail_to_pass:
        key = _title(t)
        if excerpts.get(key) and shown < max_excerpts:
            lines += ["", "pytest reports:"] if shown == 0 else []
            lines += ["", f"{key}:"] + [f"    {e}" for e in excerpts[key]]
            shown += 1
    lines += ["", "Fix the library so that these tests pass again without breaking the other tests. "
              "Do not modify the tests."]
    return "\n".join(lines)
