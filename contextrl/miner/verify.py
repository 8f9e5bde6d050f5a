"""Verification: reject pairs a policy could solve by a shortcut instead of the evidence.

Every check returns a `Check(name, passed, detail)` and all of them are recorded on the
pair's `Verdict`, so a rejected pair says why. Rule-based checks always run (unless
disabled in the config); an LLM judge (`contextrl.miner.judge`) is an optional last step.

Checks (names as recorded):
- `identical`: the contexts are the same (or the same up to whitespace; same image bytes).
- `length_ratio`: one context is much longer than the other (characters).
- `formatting`: whitespace/indentation/line-ending differences outside the decisive
  difference, or different image format/mode/size.
- `undeclared_difference`: contexts differ outside the declared decisive difference.
- `patch_leakage`: distinctive tokens of the answer patch (or of a context's own patch)
  appear in a context after masking.
- `masking`: one context masked and the other not, different numbers of mask tokens, or
  edit payloads left unmasked.
- `answer_support`: a support oracle or the pair's metadata says both contexts support A.
- `judge`: the optional judge's verdict.
"""

from __future__ import annotations

import builtins
import difflib
import hashlib
import keyword
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

from contextrl.errors import ConfigError, MiningError
from contextrl.configs import FromDict
from contextrl.miner.pair import Check, ContrastivePair, Verdict, line_opcodes, split_lines
from contextrl.miner.render import MASK, render_trajectory

CHECKS: tuple[str, ...] = (
    "identical", "length_ratio", "formatting", "undeclared_difference", "patch_leakage", "masking", "answer_support", "judge",
)
SupportOracle = Callable[[ContrastivePair, Literal["positive", "negative"]], "bool | None"]
"""`(pair, side) -> True/False/None`: does that context support the pair's answer (None: unknown)?"""


@dataclass(frozen=True)
class VerifyConfig(FromDict):
    """Thresholds and switches for `verify_pair` (validated at construction)."""

    max_length_ratio: float = 1.25
    """Longest context may be at most this many times the shortest (characters); >= 1.0."""
    leak_min_token_len: int = 4
    """Identifiers shorter than this are never counted as leaked patch tokens; >= 1."""
    max_leaked_tokens: int = 0
    """How many distinctive patch tokens a context may show before the pair is rejected; >= 0."""
    mask_count_tolerance: int = 0
    """Allowed difference between the contexts' numbers of `<PATCH_MASKED>` tokens; >= 0."""
    allow_undeclared_differences: bool = False
    """Accept content differences outside the declared decisive difference."""
    disabled_checks: tuple[str, ...] = ()
    """Names of checks to skip (any of CHECKS)."""
    judge_after_failure: bool = False
    """Also ask the judge when a rule-based check already failed (costs judge calls)."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"VerifyConfig.{name}={getattr(self, name)!r}: {fix}")

        if not isinstance(self.max_length_ratio, (int, float)) or isinstance(self.max_length_ratio, bool) or self.max_length_ratio < 1.0:
            raise bad("max_length_ratio", "use a number >= 1.0 (1.25 lets one context be 25% longer than the other)")
        for name, low in (("leak_min_token_len", 1), ("max_leaked_tokens", 0), ("mask_count_tolerance", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise bad(name, f"use an integer >= {low}")
        for name in ("allow_undeclared_differences", "judge_after_failure"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "use true or false")
        if isinstance(self.disabled_checks, str) or not all(isinstance(c, str) for c in self.disabled_checks):
            raise bad("disabled_checks", f"use a list of check names from {list(CHECKS)}")
        unknown = [c for c in self.disabled_checks if c not in CHECKS]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], CHECKS, n=1)
            raise bad("disabled_checks", f"unknown check {unknown[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; choose from {list(CHECKS)}")
        object.__setattr__(self, "disabled_checks", tuple(self.disabled_checks))



# --------------------------------------------------------------------------- helpers

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOPWORDS = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | frozenset(
    "self cls args kwargs this that with from have when then else there their which would could should "
    "must only also into some more most test tests true false none null return value values line lines "
    "file files error errors import def class pass self".split()
)


def _norm(line: str) -> str:
    return " ".join(line.split())


def _covered(lo: int, hi: int, spans: Iterable[tuple[int, ...]]) -> bool:
    """Is the line range [lo, hi) inside the spans (an empty range: touched by one)?"""
    spans = sorted(spans)
    if lo == hi:
        return any(s <= lo <= e for s, e in spans)
    reach = lo  # walk the merged spans: [lo, reach) is covered so far
    for s, e in spans:
        if s > reach:
            break
        reach = max(reach, e)
        if reach >= hi:
            return True
    return reach >= hi


def _hunks(pair: ContrastivePair) -> Iterator[tuple[int, int, int, int, bool, bool]]:
    """Non-equal line hunks: (i1, i2, j1, j2, whitespace_only, declared)."""
    pt, nt = pair.positive.text or "", pair.negative.text or ""
    a, b = split_lines(pt), split_lines(nt)
    for op, i1, i2, j1, j2 in line_opcodes(pt, nt):
        if op == "equal":
            continue
        ws_only = [n for n in map(_norm, a[i1:i2]) if n] == [n for n in map(_norm, b[j1:j2]) if n]
        declared = _covered(i1, i2, pair.difference.positive) and _covered(j1, j2, pair.difference.negative)
        yield i1, i2, j1, j2, ws_only, declared


def looks_like_patch(text: str) -> bool:
    """Does the text look like a unified diff?"""
    return bool(re.search(r"^(diff --git |--- \S|@@ -\d)", text, re.M)) and bool(re.search(r"^\+(?!\+\+)", text, re.M))


def patch_tokens(patch: str, exclude: str = "", min_len: int = 4) -> set[str]:
    """Distinctive identifiers a patch adds: in '+' lines, not in removed/context lines,
    headers or `exclude` (e.g. the query), not keywords/builtins, at least `min_len` long."""
    added, other = [], [exclude]
    for line in patch.split("\n"):
        if line.startswith(("+++", "---")):
            other.append(line)
        elif line.startswith("+"):
            added.append(line[1:])
        else:
            other.append(line)
    seen = set(_IDENT_RE.findall("\n".join(other)))
    return {t for t in _IDENT_RE.findall("\n".join(added)) if len(t) >= min_len and t not in seen and t not in _STOPWORDS}


def _image_info(path: str) -> tuple[str, Any]:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return "ok", (im.format, im.mode, im.size)
    except ImportError:
        return "skip", "Pillow is not installed"
    except Exception as e:  # unreadable/corrupt images are a verdict, not a crash
        return "error", f"cannot read {path}: {e}"


def _file_digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


# --------------------------------------------------------------------------- checks


def check_identical(pair: ContrastivePair, config: VerifyConfig) -> Check:
    """Fail when the two contexts carry the same content."""
    p, n = pair.positive, pair.negative
    if pair.kind == "image":
        if Path(p.image_path).resolve() == Path(n.image_path).resolve():
            return Check("identical", False, f"both contexts are the same file {p.image_path}")
        dp, dn = _file_digest(p.image_path), _file_digest(n.image_path)
        if dp is not None and dp == dn:
            return Check("identical", False, "the two image files have identical bytes")
        return Check("identical", True, "images differ")
    if p.text == n.text:
        return Check("identical", False, "contexts are identical")
    if _norm(p.text) == _norm(n.text):
        return Check("identical", False, "contexts are identical up to whitespace")
    return Check("identical", True, "contexts differ")


def check_length_ratio(pair: ContrastivePair, config: VerifyConfig) -> Check:
    """Fail when one text context is more than `max_length_ratio` times the other."""
    if pair.kind == "image":
        return Check("length_ratio", True, "not applicable to image contexts")
    lp, ln = len(pair.positive.text), len(pair.negative.text)
    lo, hi = min(lp, ln), max(lp, ln)
    ratio = float("inf") if lo == 0 and hi else (hi / lo if lo else 1.0)
    ok = ratio <= config.max_length_ratio
    return Check("length_ratio", ok, f"lengths {lp} vs {ln} chars, ratio {ratio:.3f} {'<=' if ok else '>'} {config.max_length_ratio}")


def check_formatting(pair: ContrastivePair, config: VerifyConfig) -> Check:
    """Fail on formatting-only differences a policy could key on instead of content."""
    if pair.kind == "image":
        (sp, ip), (sn, inn) = _image_info(pair.positive.image_path), _image_info(pair.negative.image_path)
        if "error" in (sp, sn):
            return Check("formatting", False, ip if sp == "error" else inn)
        if "skip" in (sp, sn):
            return Check("formatting", True, f"skipped: {ip if sp == 'skip' else inn}")
        if ip != inn:
            return Check("formatting", False, f"image format/mode/size differ: {ip} vs {inn}")
        return Check("formatting", True, f"both images are {ip}")
    problems = []
    pt, nt = pair.positive.text, pair.negative.text
    crlf_p, crlf_n = "\r\n" in pt, "\r\n" in nt
    if crlf_p != crlf_n:
        problems.append(f"line endings differ (CRLF in {'C+' if crlf_p else 'C-'} only)")
    if bool(pt) and bool(nt) and pt.endswith("\n") != nt.endswith("\n"):
        problems.append("one context ends with a newline, the other does not")
    for i1, i2, j1, j2, ws_only, declared in _hunks(pair):
        if ws_only and not declared:
            problems.append(f"whitespace-only difference outside the decisive region at C+ lines {i1}-{i2}, C- lines {j1}-{j2}")
    if problems:
        return Check("formatting", False, "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    return Check("formatting", True, "no formatting-only differences outside the decisive region")


def check_undeclared_difference(pair: ContrastivePair, config: VerifyConfig) -> Check:
    """Fail when contexts differ in content outside the declared decisive difference."""
    if pair.kind == "image":
        return Check("undeclared_difference", True, "not applicable to image contexts")
    if not pair.difference:
        return Check("undeclared_difference", config.allow_undeclared_differences, "no decisive difference declared (set it, e.g. with text_difference)")
    extra = [(i1, i2, j1, j2) for i1, i2, j1, j2, ws, declared in _hunks(pair) if not ws and not declared]
    if extra and not config.allow_undeclared_differences:
        where = ", ".join(f"C+ {i1}-{i2}/C- {j1}-{j2}" for i1, i2, j1, j2 in extra[:3])
        return Check("undeclared_difference", False, f"{len(extra)} differing hunk(s) outside the declared difference: {where}")
    return Check("undeclared_difference", True, f"all content differences are declared ({len(extra)} allowed extra)")


def check_patch_leakage(pair: ContrastivePair, config: VerifyConfig) -> Check:
    """Fail when distinctive patch tokens show up in a context after masking."""
    if pair.kind == "image":
        return Check("patch_leakage", True, "not applicable to image contexts")
    sources = []
    if looks_like_patch(pair.answer):
        sources.append(("answer", pair.answer))
    for side, ctx in (("C+", pair.positive), ("C-", pair.negative)):
        if ctx.trajectory is not None and ctx.trajectory.diff.strip():
            sources.append((f"{side} patch", ctx.trajectory.diff))
    if not sources:
        return Check("patch_leakage", True, "no patch to leak (answer is not a diff, no trajectory diffs)")
    leaks = []
    for side, ctx in (("C+", pair.positive), ("C-", pair.negative)):
        present = set(_IDENT_RE.findall(ctx.text.replace(MASK, " ")))
        for name, patch in sources:
            hit = sorted(patch_tokens(patch, exclude=pair.query, min_len=config.leak_min_token_len) & present)
            if len(hit) > config.max_leaked_tokens:
                leaks.append(f"{side} shows {len(hit)} token(s) of the {name}: {', '.join(hit[:5])}")
    if leaks:
        return Check("patch_leakage", False, "; ".join(leaks))
    return Check("patch_leakage", True, f"no distinctive tokens of {', '.join(n for n, _ in sources)} in either context")


def check_masking(pair: ContrastivePair, config: VerifyConfig) -> Check:
    """Fail when masking is inconsistent between the contexts or edits were left unmasked."""
    if pair.kind == "image":
        return Check("masking", True, "not applicable to image contexts")
    counts = {}
    for side, ctx in (("C+", pair.positive), ("C-", pair.negative)):
        counts[side] = ctx.text.count(MASK)
        if ctx.trajectory is not None:
            expected = render_trajectory(ctx.trajectory, mask_patches=True).count(MASK)
            if counts[side] < expected:
                return Check("masking", False, f"{side} has {expected - counts[side]} unmasked edit payload(s) ({counts[side]} of {expected} masked)")
    cp, cn = counts["C+"], counts["C-"]
    if (cp == 0) != (cn == 0):
        return Check("masking", False, f"only {'C+' if cp else 'C-'} is masked ({cp} vs {cn} mask tokens)")
    if abs(cp - cn) > config.mask_count_tolerance:
        return Check("masking", False, f"mask token counts differ: {cp} vs {cn} (tolerance {config.mask_count_tolerance})")
    return Check("masking", True, f"{cp} vs {cn} mask tokens")


def _same_answer(x: str, y: str) -> bool:
    return _norm(x).casefold() == _norm(y).casefold()


def check_answer_support(pair: ContrastivePair, config: VerifyConfig, support: SupportOracle | None = None) -> Check:
    """Fail when something says both contexts support the answer (or C+ does not)."""
    if support is not None:
        sp, sn = support(pair, "positive"), support(pair, "negative")
        if sn is True:
            return Check("answer_support", False, "support oracle: C- also supports the answer")
        if sp is False:
            return Check("answer_support", False, "support oracle: C+ does not support the answer")
    p, n = pair.positive, pair.negative
    if n.supported_answer is not None and _same_answer(n.supported_answer, pair.answer):
        return Check("answer_support", False, f"C- supports the same answer ({n.supported_answer!r})")
    if p.supported_answer is not None and not _same_answer(p.supported_answer, pair.answer):
        return Check("answer_support", False, f"C+ supports a different answer ({p.supported_answer!r})")
    tp, tn = p.trajectory, n.trajectory
    if tp is not None and tn is not None and tp.task_id == tn.task_id:
        outcome_p, outcome_n = (tp.resolved, tp.reward), (tn.resolved, tn.reward)
        if tp.resolved is not None and outcome_p == outcome_n:
            return Check("answer_support", False, f"both branches of task {tp.task_id} end the same way (resolved={tp.resolved}, reward={tp.reward})")
    return Check("answer_support", True, "no evidence that C- supports the answer")


_RULES: dict[str, Callable[[ContrastivePair, VerifyConfig], Check]] = {
    "identical": check_identical,
    "length_ratio": check_length_ratio,
    "formatting": check_formatting,
    "undeclared_difference": check_undeclared_difference,
    "patch_leakage": check_patch_leakage,
    "masking": check_masking,
}


def _judge_check(pair: ContrastivePair, judge: Callable[[ContrastivePair], Any]) -> Check:
    try:
        v = judge(pair)
    except MiningError:
        raise
    except Exception as e:  # a misbehaving plug-in is a verdict, not a crash
        return Check("judge", False, f"judge raised {type(e).__name__}: {e}")
    if isinstance(v, bool):
        return Check("judge", v, "judge accepted" if v else "judge rejected")
    ok, reason = getattr(v, "ok", None), getattr(v, "reason", "")
    if not isinstance(ok, bool):
        return Check("judge", False, f"judge returned {type(v).__name__}, expected JudgeVerdict(ok, reason)")
    return Check("judge", ok, str(reason))


def verify_pair(
    pair: ContrastivePair,
    config: VerifyConfig = VerifyConfig(),
    judge: Callable[[ContrastivePair], Any] | None = None,
    support: SupportOracle | None = None,
) -> ContrastivePair:
    """Run every enabled check and return the pair with its verdict filled.

    `judge`: any `(pair) -> JudgeVerdict(ok, reason)` (see `contextrl.miner.judge`); it runs
    after the rule-based checks, and only if they passed unless `judge_after_failure`.
    `support`: an optional oracle saying whether a context supports the answer.
    """
    checks: list[Check] = []
    for name, rule in _RULES.items():
        if name not in config.disabled_checks:
            checks.append(rule(pair, config))
    if "answer_support" not in config.disabled_checks:
        checks.append(check_answer_support(pair, config, support))
    if judge is not None and "judge" not in config.disabled_checks:
        if config.judge_after_failure or all(c.passed for c in checks):
            checks.append(_judge_check(pair, judge))
    return replace(pair, verdict=Verdict.from_checks(checks))


def verify_pairs(
    pairs: Iterable[ContrastivePair],
    config: VerifyConfig = VerifyConfig(),
    judge: Callable[[ContrastivePair], Any] | None = None,
    support: SupportOracle | None = None,
    only_ok: bool = False,
) -> Iterator[ContrastivePair]:
    """`verify_pair` over many pairs; with `only_ok`, yield only the accepted ones."""
    for pair in pairs:
        v = verify_pair(pair, config, judge, support)
        if v.verdict.ok or not only_ok:
            yield v


__all__ = [
    "CHECKS", "SupportOracle", "VerifyConfig", "check_answer_support", "check_formatting",
    "check_identical", "check_length_ratio", "check_masking", "check_patch_leakage",
    "check_undeclared_difference", "looks_like_patch", "patch_tokens", "verify_pair", "verify_pairs",
]
