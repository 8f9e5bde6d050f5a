"""Conditions in Python source, and the mutations that flip them.

Used twice: the bug-injection generator (`contextrl.envs.bugfix`) flips a condition to
make a task, and the pair miner flips a condition in code a trajectory touched to make
a counterfactual trace. Both need the same, deterministic view of "the conditions in
this file", so it lives here, parsed with tree-sitter (`tree-sitter-python`).

A `Condition` is an expression node that decides control flow or a boolean value:
a comparison (`a < b`, `x is not None`), a boolean operator (`a and b`), a `not`, or
the test of an `if` / `elif` / `while` / conditional expression / comprehension `if`
(whatever its node type). Byte offsets are UTF-8 offsets into the source, lines are
1-based and inclusive. `flips` turns a condition into `Mutation`s: each replaces the
condition's exact byte range with new text, so a mutation is a small, checkable edit
(`original` must still be at that range when it is applied).
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Literal

ConditionKind = Literal["comparison", "boolean", "not", "test"]
ConditionContext = Literal["if", "elif", "while", "conditional", "comprehension", "expression"]
MutationOperator = Literal[
    "negate",            # X -> not (X)
    "remove_not",        # not X -> X
    "boundary_shift",    # < <-> <=, > <-> >=
    "swap_direction",    # < <-> >, <= <-> >=
    "swap_equality",     # == <-> !=
    "swap_identity",     # is <-> is not
    "swap_membership",   # in <-> not in
    "swap_boolean",      # and <-> or
]
OPERATORS: tuple[str, ...] = MutationOperator.__args__  # type: ignore[attr-defined]

_NODE_KIND = {"comparison_operator": "comparison", "boolean_operator": "boolean", "not_operator": "not"}
_TEST_FIELD = {"if_statement": "if", "elif_clause": "elif", "while_statement": "while"}
_DEFINITIONS = ("function_definition", "class_definition")
# Node types that need no parentheses after `not `.
_ATOMIC = frozenset({
    "identifier", "attribute", "call", "subscript", "parenthesized_expression", "true", "false", "none",
    "integer", "float", "string", "concatenated_string", "list", "tuple", "dictionary", "set",
    "list_comprehension", "set_comprehension", "dictionary_comprehension", "generator_expression",
})
_COMPARISON_SWAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "<": (("boundary_shift", "<="), ("swap_direction", ">")),
    "<=": (("boundary_shift", "<"), ("swap_direction", ">=")),
    ">": (("boundary_shift", ">="), ("swap_direction", "<")),
    ">=": (("boundary_shift", ">"), ("swap_direction", "<=")),
    "==": (("swap_equality", "!="),),
    "!=": (("swap_equality", "=="),),
    "is": (("swap_identity", "is not"),),
    "is not": (("swap_identity", "is"),),
    "in": (("swap_membership", "not in"),),
    "not in": (("swap_membership", "in"),),
}


@dataclass(frozen=True)
class Span:
    """A node or token inside a condition: absolute byte range, text and tree-sitter type."""

    start_byte: int
    end_byte: int
    text: str
    node_type: str
    operator: str = ""
    """For a `boolean_operator` node: its `and`/`or`, so flips know the precedence."""


@dataclass(frozen=True)
class Condition:
    """One condition found in a source file."""

    file: str
    """Path the source came from (as given by the caller; "" when unknown)."""
    start_byte: int
    """UTF-8 byte offset where the condition expression starts."""
    end_byte: int
    """UTF-8 byte offset one past its end."""
    start_line: int
    """1-based first line."""
    end_line: int
    """1-based last line (inclusive)."""
    kind: ConditionKind
    """"comparison", "boolean", "not", or "test" (a bare test such as `if x:`)."""
    node_type: str
    """The tree-sitter node type, e.g. "comparison_operator" or "identifier"."""
    context: ConditionContext
    """Where it sits: the test of an if/elif/while/conditional/comprehension, or "expression"."""
    text: str
    """The source text of the condition."""
    enclosing: str
    """Qualified name of the innermost enclosing function or class ("Cls.method"), "" at module level."""
    operators: tuple[Span, ...] = ()
    """Operator tokens: each comparison operator, the `and`/`or`, or the `not` keyword."""
    operands: tuple[Span, ...] = ()
    """Operand nodes (left/right for booleans, the argument of a `not`)."""
    parent_type: str = ""
    """Tree-sitter type of the parent node, used to keep flips' precedence right."""
    parent_operator: str = ""
    """The parent's `and`/`or` when the parent is a boolean operator."""


@dataclass(frozen=True)
class Mutation:
    """Replace `original` at [start_byte, end_byte) of `file` with `replacement`."""

    file: str
    start_byte: int
    end_byte: int
    original: str
    replacement: str
    operator: str
    """One of `OPERATORS`."""
    line: int
    """1-based line of the changed token (of the condition start for negations)."""

    def matches(self, source: str | bytes) -> bool:
        """True when `original` is at the mutation's byte range of `source`."""
        data = source.encode() if isinstance(source, str) else source
        return data[self.start_byte:self.end_byte] == self.original.encode()

    def apply(self, source: str) -> str:
        """Return `source` with the mutation applied; ValueError when `original` is not there."""
        data = source.encode()
        if data[self.start_byte:self.end_byte] != self.original.encode():
            found = data[self.start_byte:self.end_byte].decode(errors="replace")
            raise ValueError(
                f"{self.file}:{self.line}: expected {self.original!r} at bytes "
                f"{self.start_byte}..{self.end_byte}, found {found!r}; the source does not match this mutation"
            )
        return (data[:self.start_byte] + self.replacement.encode() + data[self.end_byte:]).decode()

    def revert(self, mutated: str) -> str:
        """Undo `apply` on the mutated source."""
        data = mutated.encode()
        end = self.start_byte + len(self.replacement.encode())
        if data[self.start_byte:end] != self.replacement.encode():
            raise ValueError(f"{self.file}:{self.line}: mutated text not found at byte {self.start_byte}")
        return (data[:self.start_byte] + self.original.encode() + data[end:]).decode()

    def diff(self, source: str, *, reverse: bool = False, path: str | None = None) -> str:
        """Unified diff original -> mutated (or mutated -> original with `reverse`), a/ b/ prefixed."""
        mutated = self.apply(source)
        before, after = (mutated, source) if reverse else (source, mutated)
        return unified_diff(path or self.file, before, after)

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file, "start_byte": self.start_byte, "end_byte": self.end_byte, "original": self.original,
            "replacement": self.replacement, "operator": self.operator, "line": self.line,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "Mutation":
        return cls(**{k: data[k] for k in ("file", "start_byte", "end_byte", "original", "replacement", "operator", "line")})  # type: ignore[arg-type]


def unified_diff(path: str, before: str, after: str, context: int = 3) -> str:
    """A `git apply`-able unified diff of one file (`a/PATH` -> `b/PATH`); "" when equal."""
    if before == after:
        return ""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    out: list[str] = []
    for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}", n=context):
        if line.startswith(("---", "+++")):
            line = line.rstrip("\n") + "\n"
        elif not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(out)


@lru_cache(maxsize=1)
def _language():
    import tree_sitter_python
    from tree_sitter import Language

    return Language(tree_sitter_python.language())


def parse(source: str | bytes):
    """Parse Python source with tree-sitter; returns a `tree_sitter.Tree`."""
    from tree_sitter import Parser

    data = source.encode() if isinstance(source, str) else source
    return Parser(_language()).parse(data)


def _span(node) -> Span:
    op = node.child_by_field_name("operator") if node.type == "boolean_operator" else None
    return Span(node.start_byte, node.end_byte, node.text.decode(errors="replace"), node.type, op.type if op else "")


def _def_name(node) -> str:
    name = node.child_by_field_name("name")
    return name.text.decode(errors="replace") if name is not None else "?"


def _walk(root):
    """Pre-order traversal without recursion (deep expressions stay safe)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def _enclosing(node) -> str:
    names: list[str] = []
    cur = node.parent
    while cur is not None:
        if cur.type in _DEFINITIONS:
            names.append(_def_name(cur))
        cur = cur.parent
    return ".".join(reversed(names))


def _unparen(node):
    while node.type == "parenthesized_expression" and node.named_child_count == 1:
        node = node.named_children[0]
    return node


def _test_nodes(root) -> dict[int, tuple[object, str]]:
    """Map node id -> (test node, context) for every if/elif/while/conditional/comprehension test."""
    tests: dict[int, tuple[object, str]] = {}
    for node in _walk(root):
        test, ctx = None, ""
        if node.type in _TEST_FIELD:
            test, ctx = node.child_by_field_name("condition"), _TEST_FIELD[node.type]
        elif node.type == "conditional_expression" and node.named_child_count >= 2:
            test, ctx = node.named_children[1], "conditional"
        elif node.type == "if_clause" and node.named_child_count >= 1:
            test, ctx = node.named_children[0], "comprehension"
        if test is not None:
            test = _unparen(test)
            tests[test.id] = (test, ctx)
    return tests


def find_conditions(source: str | bytes, file: str = "") -> list[Condition]:
    """Every condition in `source`, ordered by (start byte, end byte descending, kind).

    Comparisons, `and`/`or`, `not`, and the tests of if/elif/while/conditional
    expressions/comprehension ifs. A test that is itself a comparison, boolean or `not`
    appears once, with its `context` set; a bare test (`if x:`) has kind "test".
    Nodes inside syntax errors are skipped.
    """
    tree = parse(source)
    tests = _test_nodes(tree.root_node)
    out: list[Condition] = []
    for node in _walk(tree.root_node):
        if node.type == "ERROR" or node.is_missing:
            continue
        kind = _NODE_KIND.get(node.type)
        test = tests.get(node.id)
        if kind is None and test is None:
            continue
        if node.has_error:
            continue
        operators: tuple[Span, ...] = ()
        operands: tuple[Span, ...] = ()
        if kind == "comparison":
            operators = tuple(_span(c) for c in node.children if not c.is_named)
            operands = tuple(_span(c) for c in node.named_children)
        elif kind == "boolean":
            operators = (_span(node.child_by_field_name("operator")),)
            operands = (_span(node.child_by_field_name("left")), _span(node.child_by_field_name("right")))
        elif kind == "not":
            operators = (_span(node.children[0]),)
            operands = (_span(node.child_by_field_name("argument")),)
        parent = node.parent
        while parent is not None and parent.type == "parenthesized_expression" and test is not None:
            parent = parent.parent
        out.append(Condition(
            file=file, start_byte=node.start_byte, end_byte=node.end_byte,
            start_line=node.start_point[0] + 1, end_line=node.end_point[0] + 1,
            kind=kind or "test", node_type=node.type, context=test[1] if test else "expression",  # type: ignore[arg-type]
            text=node.text.decode(errors="replace"), enclosing=_enclosing(node),
            operators=operators, operands=operands, parent_type=parent.type if parent is not None else "",
            parent_operator=_span(parent).operator if parent is not None else "",
        ))
    out.sort(key=lambda c: (c.start_byte, -c.end_byte, c.kind))
    return out


def _is_expression(text: str) -> bool:
    try:
        ast.parse("(\n" + text + "\n)", mode="eval")
    except SyntaxError:
        return False
    return True


def _line_of(cond: Condition, byte: int) -> int:
    return cond.start_line + cond.text.encode()[: byte - cond.start_byte].count(b"\n")


def flips(condition: Condition) -> list[Mutation]:
    """Every mutation that flips `condition`, in a fixed order; each replaces its exact text.

    negate / remove_not for every condition (unless its parent is a `not`, whose own
    remove_not covers it); for comparisons, per operator token: boundary_shift and
    swap_direction (<, <=, >, >=), swap_equality, swap_identity, swap_membership; for
    booleans, swap_boolean (parenthesising an operand or the node itself only where the
    new operator's precedence would regroup it).
    Replacements that would not parse as an expression are dropped.
    """
    c = condition
    raw = c.text.encode()
    muts: list[tuple[str, str, int]] = []  # (operator, replacement, line)
    if c.kind == "not":
        muts.append(("remove_not", c.operands[0].text, c.start_line))
    elif c.parent_type != "not_operator":
        inner = c.text if c.node_type in _ATOMIC else f"({c.text})"
        muts.append(("negate", f"not {inner}", c.start_line))
    if c.kind == "comparison":
        for tok in c.operators:
            key = " ".join(tok.text.split())
            for op, new in _COMPARISON_SWAPS.get(key, ()):
                a, b = tok.start_byte - c.start_byte, tok.end_byte - c.start_byte
                muts.append((op, (raw[:a] + new.encode() + raw[b:]).decode(), _line_of(c, tok.start_byte)))
    elif c.kind == "boolean":
        tok = c.operators[0]
        new = "or" if tok.text == "and" else "and"
        left, right = c.operands
        lp = f"({left.text})" if left.operator not in ("", new) else left.text
        rp = f"({right.text})" if right.operator not in ("", new) else right.text
        gap1 = raw[left.end_byte - c.start_byte: tok.start_byte - c.start_byte].decode()
        gap2 = raw[tok.end_byte - c.start_byte: right.start_byte - c.start_byte].decode()
        text = lp + gap1 + new + gap2 + rp
        if c.parent_operator not in ("", new):
            text = f"({text})"
        muts.append(("swap_boolean", text, _line_of(c, tok.start_byte)))
    out: list[Mutation] = []
    for op, repl, line in muts:
        if repl != c.text and _is_expression(repl):
            out.append(Mutation(c.file, c.start_byte, c.end_byte, c.text, repl, op, line))
    return out


def all_flips(source: str | bytes, file: str = "") -> list[Mutation]:
    """Every distinct flip of every condition in `source` (deduplicated by resulting edit)."""
    seen: set[tuple[int, int, str]] = set()
    out: list[Mutation] = []
    for cond in find_conditions(source, file):
        for m in flips(cond):
            key = (m.start_byte, m.end_byte, m.replacement)
            if key not in seen:
                seen.add(key)
                out.append(m)
    return out


def definitions(source: str | bytes) -> list[tuple[int, int, str]]:
    """Every function and class as (first line, last line, qualified name), 1-based, in source order."""
    out: list[tuple[int, int, str]] = []
    for node in _walk(parse(source).root_node):
        if node.type in _DEFINITIONS:
            top = node.parent if node.parent is not None and node.parent.type == "decorated_definition" else node
            qual = ".".join(filter(None, (_enclosing(node), _def_name(node))))
            out.append((top.start_point[0] + 1, node.end_point[0] + 1, qual))
    return out


def enclosing_definitions(source: str | bytes, line_ranges: Iterable[tuple[int, int]]) -> set[str]:
    """Qualified names of the innermost functions/classes containing any of the given lines.

    `line_ranges` are 1-based inclusive (start, end) pairs, e.g. the new-file ranges of
    patch hunks; a range with end < start counts as its start line. Lines at module
    level contribute nothing. Decorators count as part of the definition they decorate.
    """
    defs = definitions(source)
    found: set[str] = set()
    for start, end in line_ranges:
        for line in range(start, max(start, end) + 1):
            best: tuple[int, int, str] | None = None
            for d in defs:
                if d[0] <= line <= d[1] and (best is None or d[0] >= best[0]):
                    best = d
            if best is not None:
                found.add(best[2])
    return found
