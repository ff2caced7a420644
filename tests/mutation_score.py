"""The score of ``make mutation``, from ``mutmut results --all true``.

Prints every mutant that no test caught (``mutmut show NAME`` shows its change), then one last
line, ``mutation score: K/N killed (P%)``. A mutant whose tests ran past their deadline counts
as killed: the change made a wait endless, and the suite noticed. A mutant no test reaches
counts as not killed. Exit status 1 below ``--target``, so CI can hold the line.
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys

KILLED = {"killed", "timeout", "caught by type check"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("patterns", nargs="+", help="mutant names in scope (fnmatch patterns)")
    parser.add_argument("--mutmut", default="mutmut")
    parser.add_argument("--target", type=float, default=85.0)
    args = parser.parse_args()
    listing = subprocess.run(
        [args.mutmut, "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    verdicts: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, verdict = line.strip().rpartition(": ")
        if sep and any(fnmatch.fnmatchcase(name, p) for p in args.patterns):
            verdicts[name] = verdict
    if not verdicts:
        print("mutation score: no mutants in scope (did mutmut run?)")
        return 1
    unchecked = sorted(n for n, v in verdicts.items() if v == "not checked")
    if unchecked:
        print(f"{len(unchecked)} mutants in scope were never run, e.g. {unchecked[0]}")
    for name, verdict in sorted(verdicts.items()):
        if verdict not in KILLED:
            print(f"  {verdict}: {name}")
    killed = sum(v in KILLED for v in verdicts.values())
    total = len(verdicts)
    percent = 100.0 * killed / total
    print(f"mutation score: {killed}/{total} killed ({percent:.1f}%)")
    return 0 if percent >= args.target and not unchecked else 1


if __name__ == "__main__":
    sys.exit(main())
