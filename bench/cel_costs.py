"""What each CEL operation costs in the package the server uses, by input size.

    python -m bench.cel_costs [--sizes 1000,2000,4000,8000]

The table behind the condition cost estimate (stepstream/engine/conditioncost.py,
docs/rules.md "Condition budgets"): for each operation over a list, string or
map of n members, the best of three evaluations, its time per member and per
member squared, and the ratio of the two largest sizes (2 is linear, 4 is
quadratic). The first row is the conversion of the variables alone: the
package converts them into its own values when a context is first executed.
"""

import argparse
import time

from stepstream.celchild import load_cel

CASES = [
    ("true", "converting the variables"),
    ("person.l.all(x, x >= 0)", "all"),
    ("person.l.exists(x, x < 0)", "exists"),
    ("person.l.exists_one(x, x < 0)", "exists_one"),
    ("person.l.map(x, x).size() > 0", "map"),
    ("person.l.filter(x, x >= 0).size() > 0", "filter, every item kept"),
    ("person.l.filter(x, x < 0).size() > 0", "filter, none kept"),
    ("(person.l + person.l).size() > 0", "list + list"),
    ("-1 in person.l", "in (list)"),
    ("person.l == person.l", "== (lists)"),
    ("person.s.contains('b')", "contains"),
    ("size(person.s + person.s) == 0", "string + string"),
    ("person.s.matches('b')", "matches"),
    ("size(person.l) > 0", "size"),
    ("person.m.all(k, k != '')", "all (map keys)"),
    ("'x' in person.m", "in (map)"),
    ("person.l.all(x, person.l.all(y, y >= 0))", "all inside all (n^2 items)"),
]


def measure(cel, expression: str, n: int) -> float:
    data = {"l": list(range(n)), "s": "a" * n, "m": {str(i): i for i in range(n)}}
    program = cel.compile(expression)
    best = float("inf")
    for _ in range(3):
        context = cel.Context({"person": data})  # fresh: conversion counted every time
        started = time.perf_counter()
        program.execute(context)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000,8000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cel = load_cel()
    print(f"| operation | {' | '.join(f'n={n:,} (us)' for n in sizes)} | ns/n | ns/n^2 | ratio |")
    print("|---" * (len(sizes) + 4) + "|")
    for expression, name in CASES:
        ns = [max(1, n // 4) for n in sizes] if "inside" in name else sizes
        times = [measure(cel, expression, n) for n in ns]
        last = ns[-1]
        cells = " | ".join(f"{t * 1e6:,.0f}" for t in times)
        ratio = times[-1] / times[-2] if len(times) > 1 else float("nan")
        print(
            f"| `{expression}` ({name}) | {cells} | {times[-1] / last * 1e9:.0f} | "
            f"{times[-1] / last**2 * 1e9:.3f} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
