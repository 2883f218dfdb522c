"""Run one benchmark on an older revision and on the working tree, interleaved, and compare.

A restructuring must not cost speed, and this shared machine's load drifts by more than
the differences we care about, so the two sides run alternately in the same minutes
(old, new, old, new, ...) with the same command, and the answer is a ratio of medians.

Usage::

    python bench/compare_revisions.py --rev f88e546 --rounds 3 \\
        --row '^hub drain ' -- bench/hub_ingest.py --batch-sizes 1000 --paced-rate 0 \\
        --orm-events 0

The older revision is checked out with ``git worktree`` into a temporary folder and run
from there (``python -m`` and the command's own imports then resolve to its packages
before the editable install's, which ``sys.meta_path`` consults last). ``--row`` picks
the output lines to read; the number read is the first one with a thousands separator
or a decimal point after the label, so plain integers such as batch sizes are skipped
(for bench/hub_ingest.py: events per second).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"\s(\d{1,3}(?:,\d{3})+|\d+\.\d+)(?=\s|$)")


def run_once(tree: Path, command: list[str], row: re.Pattern[str]) -> list[float]:
    """The numbers of every ``row`` line one run of ``command`` in ``tree`` prints."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [sys.executable, *command], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{command} failed in {tree}:\n{result.stderr[-3000:]}")
    values = []
    for line in result.stdout.splitlines():
        label = row.search(line)
        if label and (match := NUMBER.search(line, label.end())):
            values.append(float(match.group(1).replace(",", "")))
    if not values:
        raise SystemExit(f"no line matching {row.pattern!r} in:\n{result.stdout[-3000:]}")
    return values[:1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the older revision (commit, tag)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--row", required=True, help="regex of the output line to read")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT ARGS...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    row = re.compile(args.row)
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(old), args.rev],
            cwd=REPO,
            check=True,
        )
        try:
            samples: dict[str, list[float]] = {args.rev: [], "working tree": []}
            for round_no in range(1, args.rounds + 1):
                for label, tree in ((args.rev, old), ("working tree", REPO)):
                    value = run_once(tree, command, row)[0]
                    samples[label].append(value)
                    print(f"round {round_no}: {label:<14} {value:12,.0f}", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False
            )
    base, new = (statistics.median(samples[k]) for k in (args.rev, "working tree"))
    print(f"\nmedian of {args.rounds}: {args.rev} {base:,.0f}, working tree {new:,.0f}")
    print(f"working tree / {args.rev} = {new / base:.3f}")


if __name__ == "__main__":
    main()
