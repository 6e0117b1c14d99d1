"""CEL conditions: compiled once when saved, evaluated against one person.

The implementation is `common-expression-language` (Rust-backed bindings),
chosen by measurement over `cel-python` (docs/rules.md, bench/cel_compare.py).
User text is only ever handed to `cel.compile`; nothing else evaluates it.

Each compiled condition also knows which variables it reads (`deps`): pairs
`(root, key)` such as `("events", "signup")` or `("person", None)` when it
reads a root as a whole (`size(person)`, `"x" in events`, `events[name]`).
The engine uses them to re-evaluate only what a write can change
(docs/architecture.md, "Rules").
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stepstream.celchild import load_cel
from stepstream.engine import conditioncost, sandbox
from stepstream.errors import Invalid

if TYPE_CHECKING:
    from cel.cel import Context, Program

cel = load_cel()

ROOTS = ("person", "events", "flows", "segments", "now", "page")
MAX_LENGTH = 4096
MAX_SEGMENTS = 200  # segments per environment: each write that reads `segments` evaluates them all
_MACROS = {"all", "exists", "exists_one", "map", "filter"}
_BUILTIN_NAMES = {
    "true",
    "false",
    "null",
    "in",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "list",
    "map",
    "type",
    "null_type",
    "timestamp",
    "duration",
}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>[rRbB]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''
                           |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>\d[\w.]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    # every alternative of _TOKEN is a named group: lastgroup is never None
    return [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(text) if m.lastgroup != "space"]


def _literal_key(token: str) -> str | None:
    """The value of a plain string literal, or None when it has prefixes or escapes."""
    if len(token) >= 2 and token[0] in "\"'" and token[-1] == token[0] and "\\" not in token:
        if token.startswith(('"""', "'''")):
            return None
        return token[1:-1]
    return None


Dep = tuple[str, str | None]  # (root, key), or (root, None): the whole root


def analyse(text: str) -> tuple[frozenset[Dep], set[str]]:
    """(deps, macro-bound names) read from the expression's tokens.

    Conservative: anything it cannot pin to one key reads the whole root,
    which only makes the engine evaluate more often, never less.
    """
    toks = _tokens(text)
    deps: set[Dep] = set()
    bound: set[str] = set()
    for i, (kind, value) in enumerate(toks):
        if kind != "ident":
            continue
        prev = toks[i - 1][1] if i > 0 else ""
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if prev == "." and value in _MACROS and nxt == "(":
            if i + 3 < len(toks) and toks[i + 2][0] == "ident" and toks[i + 3][1] == ",":
                bound.add(toks[i + 2][1])
            continue
        if prev == "." or value not in ROOTS or nxt == "(":
            continue
        if value == "now":
            deps.add(("now", None))
            continue
        after = toks[i + 2] if i + 2 < len(toks) else ("", "")
        after2 = toks[i + 3][1] if i + 3 < len(toks) else ""
        if prev == "in" and i >= 2 and toks[i - 2][0] == "string" and nxt != ".":
            deps.add((value, _literal_key(toks[i - 2][1])))
        elif nxt == "." and after[0] == "ident" and after2 != "(":
            deps.add((value, after[1]))
        elif nxt == "[" and after[0] == "string" and after2 == "]":
            key = _literal_key(after[1])
            deps.add((value, key))
        else:
            deps.add((value, None))
    return frozenset(deps), bound


@dataclass(frozen=True, slots=True)
class Condition:
    text: str
    program: "Program"
    deps: frozenset[Dep]
    roots: frozenset[str]  # of root names read
    cost: int = 0  # worst-case estimate under the input limits (conditioncost)
    inline: bool = True  # cheap enough to run in this process (else: engine.sandbox)

    @property
    def segments(self) -> set[str]:
        """Segments named literally (`segments.x`, `segments["x"]`)."""
        return {k for r, k in self.deps if r == "segments" and k is not None}

    def evaluate(self, variables: "Variables") -> bool:
        """True only for a bool true; any evaluation error counts as false.

        A costly condition runs in a child process with a deadline (engine.sandbox)."""
        if not self.inline:
            return sandbox.current().evaluate(self.text, variables.values) is True
        try:
            return self.program.execute(variables.context) is True
        except Exception:
            return False


def _first_line(message: object) -> str:
    line = str(message).split("\n")[0]
    return line.replace("Failed to parse expression", "syntax error in").strip()


def compile_condition(
    text: object, where: str, roots: tuple[str, ...] = ROOTS, saving: bool = True
) -> Condition:
    """Compiles user text or raises a 400 naming `where` (e.g. `transitions[2].condition`).

    `saving`: the budget is enforced. A condition saved before (under an older
    estimate or a larger budget) is loaded with `saving=False`: never refused
    once stored, it is costed all the same and, when costly, evaluated apart
    (engine.sandbox), so a lowered budget cannot break an environment's writes."""
    if not isinstance(text, str) or not text.strip():
        raise Invalid(f"{where}: a condition must be a non-empty string of CEL.")
    if len(text) > MAX_LENGTH:
        raise Invalid(f"{where}: a condition may be at most {MAX_LENGTH} characters.")
    if "\x00" in text:
        raise Invalid(f"{where} must not contain NUL (\\u0000) characters.")
    try:
        program = cel.compile(text)
    except Exception as e:  # the bindings raise ValueError; never let one become a 500
        raise Invalid(f"{where}: {_first_line(e)}") from None
    deps, bound = analyse(text)
    try:
        variables = set(program.variables())
    except Exception:
        variables = set()
    unknown = sorted(v for v in variables - bound if v not in roots and v not in _BUILTIN_NAMES)
    if unknown:
        allowed = ", ".join(roots)
        raise Invalid(
            f"{where}: unknown variable {', '.join(repr(v) for v in unknown)} "
            f"(the variables are {allowed})."
        )
    used_roots = frozenset(v for v in variables if v in roots) | {r for r, _ in deps}
    cost = check_cost(text, where) if saving else estimated_cost(text)
    inline = cost <= inline_cost()
    if not inline:  # a child ready before the first evaluation (engine.sandbox)
        sandbox.current().warm()
    return Condition(text, program, deps, frozenset(used_roots), cost, inline)


def limits() -> conditioncost.Limits:
    from django.conf import settings

    s = settings.STEPSTREAM
    return conditioncost.Limits(
        items=s["DATA_MAX_ITEMS"],
        string_chars=s["DATA_MAX_STRING"],
        data_bytes=s["DATA_MAX_BYTES"],
        event_names=s["MAX_EVENT_NAMES"],
        flows=s["MAX_FLOWS"],
        segments=MAX_SEGMENTS,
    )


def inline_cost() -> int:
    from django.conf import settings

    return settings.STEPSTREAM["CONDITION_INLINE_COST"]


def budget() -> int:
    from django.conf import settings

    return settings.STEPSTREAM["CONDITION_COST_BUDGET"]


def estimated_cost(text: str) -> int:
    return conditioncost.estimate(text, limits()).cost


def check_cost(text: str, where: str) -> int:
    """The condition's worst-case cost, or a 400 naming it and its costliest part."""
    found = conditioncost.estimate(text, limits())
    allowed = budget()
    if found.cost > allowed:
        part = found.text if len(found.text) <= 120 else found.text[:117] + "..."
        why = f" Its costliest part is `{part}` ({found.part_cost:,} units)" if part else ""
        quadratic = ".map(" in part or ".filter(" in part
        hint = (
            " `map` and `filter` are quadratic in the items they keep: test with `exists` "
            "or `all` instead."
            if quadratic
            else " Iterate over less (nested macros multiply), or compare smaller values."
        )
        raise Invalid(
            f"{where}: the condition may cost up to {found.cost:,} units for the largest "
            f"inputs the limits allow, over the budget of {allowed:,} "
            f"(STEPSTREAM_CONDITION_COST_BUDGET).{why}.{hint}"
        )
    return found.cost


def reads(dep_set: Iterable[Dep], dirty: Mapping[str, set[str | None]]) -> bool:
    """Whether a condition reading `dep_set` may see a change listed in `dirty`.

    `dirty` maps a root to the set of keys changed (None in it: the whole root).
    """
    for root, key in dep_set:
        keys = dirty.get(root)
        if keys is None:
            continue
        if key is None or None in keys or key in keys:
            return True
    return False


class Variables:
    """A condition's variables, and the CEL context made of them once they are read.

    The package converts the values into its own when a context is first
    executed and keeps them, so one context serves every condition of a write."""

    __slots__ = ("values", "_context")

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self._context: Context | None = None

    @property
    def context(self) -> "Context":
        if self._context is None:
            self._context = cel.Context(self.values)
        return self._context


def context(variables: dict[str, Any]) -> Variables:
    return Variables(variables)
