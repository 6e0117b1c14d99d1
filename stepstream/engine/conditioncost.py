"""The worst-case cost of a CEL condition, estimated from its text when it is saved.

As Kubernetes does for CEL validation rules: every input a condition reads has
a declared largest size (the limits on person data and event names, checked
when they are written: `Limits`), and the estimate walks the expression once,
carrying for each part an upper bound of its size (`Shape`) and of the work
to compute it (`cost`, in units of about one CEL value visited, 0.1-0.2 us on
this package; docs/rules.md, "Condition budgets", has the measured table).
A condition whose estimate exceeds the budget is refused when saved.

The estimate is an upper bound, never an average: anything it cannot pin
down (a field of person data, a function it does not know) takes the largest
shape the limits allow. Two costs of this CEL package are not the language's:
`map` and `filter` copy their accumulated result on every kept item, so they
are quadratic in the number of items (QUADRATIC below), and the variables are
converted once per evaluation context, which the engine builds once per write.

The parser is a recursive descent over CEL's grammar (cel-spec, "Syntax"). It
runs only on text `cel.compile` has accepted; where it meets something it does
not expect it estimates the rest as the largest shape, never less.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Any

# The accumulator copy of `map` and `filter`: 20.8 ns per n^2 against about
# 180 ns per item visited (bench/cel_costs.py), so n^2 / 8 units.
QUADRATIC_DIVISOR = 8
CHARS_PER_UNIT = 16  # scanning or copying a string: one unit per 16 characters
REGEX_FACTOR = 16  # compiling a pattern, per unit of its length

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>[rRbB]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''
                           |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||\.\?|.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The largest inputs writes may hold (docs/security.md, "Limits on what is written")."""

    items: int  # items of a list, entries of an object, in person data and properties
    string_chars: int  # characters of a string or an object key there
    data_bytes: int  # a person's data as JSON
    event_names: int  # distinct event names per person
    flows: int  # flows per environment (the `flows` map)
    segments: int  # segments per environment (the `segments` map)


class Shape:
    """Upper bounds of a value: `items` members to iterate, `weight` units to visit it whole,
    and the shapes of its members (`elem`) and keys (`key`; None for lists and scalars)."""

    __slots__ = ("items", "weight", "elem", "key")

    def __init__(
        self, items: int, weight: int, elem: "Shape | None" = None, key: "Shape | None" = None
    ) -> None:
        self.items = items
        self.weight = max(1, weight)
        self.elem = elem
        self.key = key

    def member(self) -> "Shape":
        return self.elem if self.elem is not None else SCALAR

    def iterated(self) -> "Shape":
        """What a comprehension variable over this value may be: a list's item or a map's key."""
        if self.key is None:
            return self.member()
        if self.elem is None or self.key is self.elem:
            return self.key
        return join(self.key, self.elem)


SCALAR = Shape(0, 1)


def string_shape(chars: int) -> Shape:
    return Shape(0, math.ceil(chars / CHARS_PER_UNIT))


def join(a: Shape, b: Shape, depth: int = 0) -> Shape:
    """A shape at least as large as either."""
    if a is b:
        return a
    if _covers(a, b, depth):
        return a
    if _covers(b, a, depth):
        return b
    if depth > 8:  # only shapes built from the expression are this deep: take the sums
        return Shape(a.items + b.items, a.weight + b.weight, ANY, ANY)
    return Shape(
        max(a.items, b.items),
        max(a.weight, b.weight),
        _join_opt(a.elem, b.elem, depth),
        _join_opt(a.key, b.key, depth),
    )


def _covers(a: Shape | None, b: Shape | None, depth: int) -> bool:
    if b is None or a is b:
        return True
    if a is None:
        return False
    if depth > 9:
        return False
    return (
        a.items >= b.items
        and a.weight >= b.weight
        and _covers(a.elem, b.elem, depth + 1)
        and _covers(a.key, b.key, depth + 1)
    )


def _join_opt(a: Shape | None, b: Shape | None, depth: int) -> Shape | None:
    if a is None:
        return b
    if b is None:
        return a
    return join(a, b, depth + 1)


ANY = Shape(0, 1)  # made the largest input shape by `roots`, for unknown values


@dataclass(slots=True)
class Estimate:
    cost: int
    shape: Shape
    text: str = ""  # the costliest part, for the refusal's sentence
    part_cost: int = 0

    def __post_init__(self) -> None:
        if not self.part_cost:
            self.part_cost = self.cost


@dataclass(slots=True)
class _Roots:
    shapes: dict[str, Shape] = field(default_factory=dict)
    data: Shape = ANY
    string: Shape = SCALAR  # the longest string of person data


def _page_shape() -> Shape:
    """`page`: {url, path, query}, every string at most the URL's length, the query at most
    one member per two characters of it (stepstream.engine.pages.MAX_URL)."""
    text = string_shape(MAX_PAGE_URL)
    query = Shape(MAX_PAGE_URL // 2, MAX_PAGE_URL, text, text)
    return Shape(3, 3 * MAX_PAGE_URL, query, string_shape(5))


MAX_PAGE_URL = 2048  # stepstream.engine.pages.MAX_URL


def roots(limits: Limits) -> _Roots:
    """The largest shape of each variable under `limits`."""
    key = string_shape(limits.string_chars)
    # any value in person data: a list or object of `items` members, each such a value,
    # or a string; visiting the whole of it costs at most one unit per two bytes
    data_weight = max(limits.data_bytes // 2, limits.items, key.weight)
    data = Shape(limits.items, data_weight)
    data.elem = data
    data.key = key
    name = string_shape(255)
    event = Shape(3, 4, SCALAR, name)
    return _Roots(
        {
            "person": data,
            "events": Shape(limits.event_names, limits.event_names * 5, event, name),
            "flows": Shape(limits.flows, limits.flows * 2, SCALAR, name),
            "segments": Shape(limits.segments, limits.segments * 2, SCALAR, name),
            "now": SCALAR,
            "page": _page_shape(),
        },
        data,
        key,
    )


class _Parser:
    def __init__(self, text: str, variables: _Roots):
        self.text = text
        self.toks = [
            (m.lastgroup or "", m.group(), m.start())  # every alternative is a named group
            for m in _TOKEN.finditer(text)
            if m.lastgroup != "space"
        ]
        self.i = 0
        self.roots = variables
        self.scopes: list[dict[str, Any]] = []
        self.worst: tuple[int, str] = (0, "")

    # -- tokens ---------------------------------------------------------------
    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.toks[j][1] if j < len(self.toks) else ""

    def kind(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.toks[j][0] if j < len(self.toks) else ""

    def take(self) -> str:
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, tok: str) -> bool:
        if self.peek() == tok:
            self.i += 1
            return True
        return False

    def pos(self) -> int:
        return self.toks[self.i][2] if self.i < len(self.toks) else len(self.text)

    def note(self, start: int, cost: int) -> None:
        """Remembers the costliest macro or operation seen, to name it."""
        if cost > self.worst[0]:
            end = self.toks[self.i - 1][2] + len(self.toks[self.i - 1][1]) if self.i else 0
            self.worst = (cost, self.text[start:end])

    # -- grammar ----------------------------------------------------------------
    def expr(self) -> Estimate:
        cond = self.or_()
        if self.accept("?"):
            a = self.or_()
            self.accept(":")
            b = self.expr()
            return Estimate(cond.cost + max(a.cost, b.cost) + 1, join(a.shape, b.shape))
        return cond

    def or_(self) -> Estimate:
        left = self.and_()
        while self.accept("||"):
            right = self.and_()
            left = Estimate(left.cost + right.cost + 1, SCALAR)
        return left

    def and_(self) -> Estimate:
        left = self.relation()
        while self.accept("&&"):
            right = self.relation()
            left = Estimate(left.cost + right.cost + 1, SCALAR)
        return left

    def relation(self) -> Estimate:
        start = self.pos()
        left = self.addition()
        while self.peek() in ("<", "<=", ">", ">=", "==", "!=", "in"):
            op = self.take()
            right = self.addition()
            a, b = left.shape, right.shape
            if op == "in":  # a list is scanned, comparing each item
                work = b.items * (min(a.weight, b.iterated().weight) + 1) + a.weight
            else:
                work = min(a.weight, b.weight) + 1
            left = Estimate(left.cost + right.cost + work, SCALAR)
            self.note(start, work)
        return left

    def addition(self) -> Estimate:
        start = self.pos()
        left = self.multiplication()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.multiplication()
            a, b = left.shape, right.shape
            if op == "+" and (a.weight > 1 or b.weight > 1 or a.items or b.items):
                # may be a concatenation of lists or strings: both copied
                work = a.weight + b.weight
                shape = Shape(
                    a.items + b.items,
                    a.weight + b.weight,
                    _join_opt(a.elem, b.elem, 0),
                    _join_opt(a.key, b.key, 0),
                )
                left = Estimate(left.cost + right.cost + work, shape)
                self.note(start, work)
            else:
                left = Estimate(left.cost + right.cost + 1, SCALAR)
        return left

    def multiplication(self) -> Estimate:
        left = self.unary()
        while self.peek() in ("*", "/", "%"):
            self.take()
            right = self.unary()
            left = Estimate(left.cost + right.cost + 1, SCALAR)
        return left

    def unary(self) -> Estimate:
        if self.peek() in ("!", "-"):
            self.take()
            inner = self.unary()
            return Estimate(inner.cost + 1, SCALAR if inner.shape.weight <= 1 else inner.shape)
        return self.member()

    def member(self) -> Estimate:
        value = self.primary()
        while True:
            if self.peek() in (".", ".?"):
                start = self.pos()
                self.take()
                name = self.take()
                if self.peek() == "(":
                    value = self.method(value, name, start)
                else:
                    value = Estimate(value.cost + 1, value.shape.member())
            elif self.peek() == "[":
                self.take()
                index = self.expr()
                self.accept("]")
                value = Estimate(value.cost + index.cost + index.shape.weight, value.shape.member())
            elif self.peek() == "{" and value.shape is SCALAR and self._is_message():
                self.take()
                value = self.inits("}", value.cost)
            else:
                return value

    def _is_message(self) -> bool:
        return False  # `Name{...}` messages: no message types exist for conditions

    def primary(self) -> Estimate:
        kind, tok = self.kind(), self.peek()
        if tok == "(":
            self.take()
            inner = self.expr()
            self.accept(")")
            return inner
        if tok == "[":
            self.take()
            return self.list_literal()
        if tok == "{":
            self.take()
            return self.inits("}", 0)
        if tok == ".":  # a leading dot: a name from the root scope
            self.take()
            kind, tok = self.kind(), self.peek()
        if kind == "ident":
            self.take()
            if self.peek() == "(":
                return self.function(tok)
            for scope in reversed(self.scopes):
                if tok in scope:
                    return Estimate(1, scope[tok])
            if tok in ("true", "false", "null"):
                return Estimate(1, SCALAR)
            return Estimate(1, self.roots.shapes.get(tok, self.roots.data))
        if kind == "string":
            self.take()
            return Estimate(1, string_shape(len(tok)))
        if kind == "number":
            self.take()
            return Estimate(1, SCALAR)
        self.take()  # something unexpected: the largest shape, never less
        return Estimate(1, self.roots.data)

    def arguments(self) -> list[Estimate]:
        args = []
        self.accept("(")
        while self.peek() not in (")", ""):
            args.append(self.expr())
            if not self.accept(","):
                break
        self.accept(")")
        return args

    def list_literal(self) -> Estimate:
        items, cost, weight, elem = 0, 1, 1, None
        while self.peek() not in ("]", ""):
            self.accept("?")  # optional entry
            item = self.expr()
            items += 1
            cost += item.cost
            weight += item.shape.weight
            elem = item.shape if elem is None else join(elem, item.shape)
            if not self.accept(","):
                break
        self.accept("]")
        return Estimate(cost, Shape(items, weight, elem or SCALAR))

    def inits(self, close: str, cost: int) -> Estimate:
        items, weight, elem, key = 0, 1, None, None
        cost += 1
        while self.peek() not in (close, ""):
            self.accept("?")
            k = self.expr()
            self.accept(":")
            v = self.expr()
            items += 1
            cost += k.cost + v.cost + k.shape.weight
            weight += k.shape.weight + v.shape.weight
            elem = v.shape if elem is None else join(elem, v.shape)
            key = k.shape if key is None else join(key, k.shape)
            if not self.accept(","):
                break
        self.accept(close)
        return Estimate(cost, Shape(items, weight, elem or SCALAR, key or SCALAR))

    def function(self, name: str) -> Estimate:
        start = self.toks[self.i - 1][2]
        if name == "has":  # a macro over a field selection: one lookup
            arg = self.arguments()
            return Estimate(sum(a.cost for a in arg) + 1, SCALAR)
        args = self.arguments()
        return self.apply(name, None, args, start)

    def method(self, target: Estimate, name: str, start: int) -> Estimate:
        if name in ("all", "exists", "exists_one", "map", "filter"):
            return self.macro(target, name, start)
        return self.apply(name, target, self.arguments(), start)

    def macro(self, target: Estimate, name: str, start: int) -> Estimate:
        self.accept("(")
        var = self.take() if self.kind() == "ident" else ""
        self.accept(",")
        rng = target.shape
        self.scopes.append({var: rng.iterated()})
        try:
            parts = [self.expr()]
            while self.accept(","):
                parts.append(self.expr())
        finally:
            self.scopes.pop()
        self.accept(")")
        n = rng.items
        per_item = sum(p.cost for p in parts) + 1
        cost = target.cost + n * per_item
        if name in ("map", "filter"):
            cost += n * n // QUADRATIC_DIVISOR
            shape = (
                Shape(n, 1 + n * parts[-1].shape.weight, parts[-1].shape)
                if name == "map"
                else Shape(n, rng.weight, rng.iterated())
            )
        else:
            shape = SCALAR
        self.note(start, cost - target.cost)
        return Estimate(cost, shape)

    def apply(self, name: str, target: Estimate | None, args: list[Any], start: int) -> Estimate:
        ins = ([target] if target is not None else []) + args
        cost = sum(a.cost for a in ins) + 1
        weights = [a.shape.weight for a in ins]
        if name == "size":
            return Estimate(cost, SCALAR)
        # string functions read at most a string: anything else is an error, found at once
        weights = [min(w, self.roots.string.weight) for w in weights]
        if name in ("contains", "startsWith", "endsWith"):
            work = sum(weights)
            self.note(start, work)
            return Estimate(cost + work, SCALAR)
        if name == "matches":
            work = (weights[0] if weights else 0) + REGEX_FACTOR * sum(weights[1:])
            self.note(start, work)
            return Estimate(cost + work, SCALAR)
        if name in ("int", "uint", "double", "bool", "timestamp", "duration", "type"):
            return Estimate(cost + sum(weights), SCALAR)
        if name in ("string", "bytes") or name.startswith("get"):
            return Estimate(cost + sum(weights), Shape(0, 2 * sum(weights)))
        # anything else (dyn, optional helpers, a function the package may add): linear in
        # its inputs, and a result as large as any input or the largest data
        work = sum(a.shape.weight for a in ins)
        shape = self.roots.data
        for a in ins:
            shape = join(shape, a.shape)
        return Estimate(cost + work, shape)


def estimate(text: str, limits: Limits) -> Estimate:
    """The worst-case cost of a condition `cel.compile` accepted, and its costliest part."""
    parser = _Parser(text, roots(limits))
    result = parser.expr()
    while parser.i < len(parser.toks):  # trailing tokens (never from valid CEL): count them
        parser.take()
        result = Estimate(result.cost + 1, result.shape)
    worst_cost, worst_text = parser.worst
    return Estimate(result.cost, result.shape, worst_text, worst_cost)
