"""Summarises a py-spy `--format raw` profile (collapsed stacks): where the samples went.

    python -m bench fanout --n 1000 --target stepstream --profile --profile-format raw
    python -m bench.topstacks bench/results/profile-fanout-stepstream-sqlite.txt [--top 30]

Prints the functions with the most samples on the CPU themselves (self) and
anywhere on the stack (inclusive), as a share of all samples; `--thread`
keeps only the threads whose name contains the text (py-spy --threads puts
the thread first in each stack).
"""

import argparse
from collections import Counter


def load(path: str, thread: str | None = None) -> tuple[Counter, Counter, int]:
    own, inclusive, total = Counter(), Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            if thread and not (frames and thread in frames[0]):
                continue
            n = int(count)
            total += n
            if frames:
                own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    return own, inclusive, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread")
    args = parser.parse_args()
    own, inclusive, total = load(args.path, args.thread)
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"\n-- {title} --")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
