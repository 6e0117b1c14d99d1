"""Compare the two CEL candidates: compile time, evaluation time, a cel-spec sample.

    python -m bench.cel_compare

Candidates: `common-expression-language` (module `cel`, Rust-backed bindings)
and `cel-python` (module `celpy`, pure Python). Both are installed only for
this comparison; the server uses the one docs/rules.md names. The conformance
sample is a small set of cel-spec features (macros, timestamps, durations,
strings, int/uint/double semantics, errors) with the result the spec gives;
an error is expected where the spec says the expression has no value.
"""

import datetime
import statistics
import time

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
CONTEXT = {
    "person": {"plan": "pro", "seats": 3, "tags": ["a", "b"]},
    "events": {
        "x": {"count": 4, "first_at": NOW - datetime.timedelta(days=2), "last_at": NOW},
    },
    "flows": {"onboarding": "completed"},
    "segments": {"s": True, "t": False},
    "now": NOW,
}

TYPICAL = [
    'person.plan == "pro"',
    "has(events.x) && events.x.count >= 3",
    '"s" in segments && segments.s',
    'has(events.x) && now - events.x.last_at < duration("24h")',
    'flows.onboarding == "completed" && person.seats > 2',
]

ERROR = object()
# (expression, expected value or ERROR)
SPEC_SAMPLE = [
    ("has(person.plan)", True),
    ("has(person.nope)", False),
    ("[1, 2, 3].all(x, x > 0)", True),
    ("[1, 2, 3].exists(x, x > 2)", True),
    ("[1, 2, 3].exists_one(x, x > 1)", False),
    ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", True),
    ("[1, 2, 3].filter(x, x % 2 == 1) == [1, 3]", True),
    ("{'a': 1}.all(k, k == 'a')", True),
    ('timestamp("2026-12-01T12:00:00Z") == now', True),
    ('now - duration("1h") < now', True),
    ('duration("90m") == duration("1h30m")', True),
    ('timestamp("2026-12-01T12:00:00Z").getHours() == 12', True),
    ('timestamp("2026-12-01T12:00:00Z").getDayOfWeek() == 2', True),
    ("now - events.x.first_at == duration('48h')", True),
    ('"hello".startsWith("he")', True),
    ('"hello".endsWith("lo")', True),
    ('"hello".contains("ell")', True),
    ('"hello".matches("^h.*o$")', True),
    ('size("héllo") == 5', True),
    ('"a" + "b" == "ab"', True),
    ("string(12) == '12'", True),
    ('int("42") == 42', True),
    ("1 + 2u", ERROR),  # no mixed int/uint arithmetic
    ("1 == 1.0", True),  # cross-type numeric equality (cel-spec 2023+)
    ("3 / 2 == 1", True),
    ("3.0 / 2.0 == 1.5", True),
    ("1 / 0", ERROR),
    ("9223372036854775807 + 1", ERROR),  # int overflow is an error
    ("0u - 1u", ERROR),  # uint underflow is an error
    ("uint(3) == 3u", True),
    ("double(1) == 1.0", True),
    ("type(1) == int", True),
    ("type(1u) == uint", True),
    ("person.nope == 1", ERROR),  # no such key
    ("false && person.nope == 1", False),  # error absorbed by && (commutative)
    ("person.nope == 1 || true", True),  # error absorbed by ||
    ('"x" in events', True),
    ('"b" in person.tags', True),
    ("size(person.tags) == 2", True),
    ("[1, 2] + [3] == [1, 2, 3]", True),
    ("{'a': 1}['a'] == 1", True),
    ("null == null", True),
    ('b"abc" == b"abc"', True),
    ("true ? 1 : 2", 1),
    ("-(-9223372036854775807 - 1)", ERROR),  # negation overflow
]


def _rust():
    import cel

    def compile_(text):
        return cel.compile(text)

    def run(program):
        return program.execute(CONTEXT)

    return "common-expression-language", compile_, run


def _python():
    import celpy

    env = celpy.Environment()
    activation = {k: celpy.json_to_cel(v) for k, v in CONTEXT.items() if k != "now"}
    activation["now"] = celpy.celtypes.TimestampType(NOW)
    activation["events"] = celpy.celtypes.MapType(
        {
            celpy.celtypes.StringType("x"): celpy.celtypes.MapType(
                {
                    celpy.celtypes.StringType("count"): celpy.celtypes.IntType(4),
                    celpy.celtypes.StringType("first_at"): celpy.celtypes.TimestampType(
                        NOW - datetime.timedelta(days=2)
                    ),
                    celpy.celtypes.StringType("last_at"): celpy.celtypes.TimestampType(NOW),
                }
            )
        }
    )

    def compile_(text):
        return env.program(env.compile(text))

    def run(program):
        result = program.evaluate(activation)
        if isinstance(result, celpy.CELEvalError | Exception):
            raise RuntimeError(str(result))
        return result

    return "cel-python", compile_, run


def _time(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def measure(candidate) -> dict:
    name, compile_, run = candidate
    compile_us, eval_us = [], []
    for text in TYPICAL:
        compile_us.append(_time(lambda text=text: compile_(text), 200))
        program = compile_(text)
        assert run(program) is True or run(program) == True, (name, text)  # noqa: E712
        eval_us.append(_time(lambda program=program: run(program), 2000))
    passed, failures = 0, []
    for text, expected in SPEC_SAMPLE:
        try:
            value = run(compile_(text))
            ok = expected is not ERROR and value == expected and type(value) is not str
            ok = ok or (expected is not ERROR and value == expected)
        except Exception:
            value, ok = "error", expected is ERROR
        if ok:
            passed += 1
        else:
            failures.append(f"{text} -> {value!r}")
    return {
        "name": name,
        "compile_us": statistics.median(compile_us),
        "eval_us": statistics.median(eval_us),
        "per_expression": list(zip(TYPICAL, compile_us, eval_us, strict=True)),
        "passed": passed,
        "failures": failures,
    }


def main() -> None:
    for candidate in (_rust(), _python()):
        r = measure(candidate)
        print(f"## {r['name']}")
        print(f"median compile {r['compile_us']:.1f} us, median evaluation {r['eval_us']:.1f} us")
        for text, c, e in r["per_expression"]:
            print(f"  compile {c:8.1f} us  eval {e:7.1f} us  {text}")
        print(f"cel-spec sample: {r['passed']}/{len(SPEC_SAMPLE)} pass")
        for f in r["failures"]:
            print(f"  FAIL {f}")


if __name__ == "__main__":
    main()
