"""``make mutants``: apply each plausible bug of this folder to a copy and run the suite.

Every ``NN-name.patch`` here is one bug a person could write while changing omar-bulk (README.md
says what a user would see). For each, in a temporary copy of the tracked files (the checkout
is never touched):

1. the patch is applied (``git apply``); one that no longer applies counts as not killed;
2. the tests named on its ``Tests:`` lines run first, with ``-x`` (they are where the bug shows,
   so a killed mutant costs seconds);
3. if those pass, the rest of the suite runs, with ``-x``: the verdict is the whole suite's.

One line per mutant (killed / SURVIVED / does-not-apply), then ``semantic mutants: K/N killed``.
Exit status 1 when any mutant was not killed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: A mutant that makes a wait endless fails its test here instead of the suite's 300 s.
TEST_TIMEOUT = "60"


def tests_of(patch: Path) -> list[str]:
    """The test files or node ids a patch names on its ``Tests:`` lines (before the diff)."""
    named: list[str] = []
    for line in patch.read_text(encoding="utf-8").splitlines():
        if line.startswith("diff --git"):
            break
        if line.startswith("Tests:"):
            named += line.removeprefix("Tests:").split()
    return named


def copy_tree(target: Path) -> None:
    """The files of the checkout git tracks or would (new ones not ignored), as they are in
    the working tree, into ``target``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    # Folders as the checkout has them: a fixture folder made group-writable by a umask would
    # be refused as a state folder, and fail its test on the unchanged copy.
    for folder in sorted(p for p in target.rglob("*") if p.is_dir()):
        shutil.copymode(ROOT / folder.relative_to(target), folder)


def pytest(copy: Path, args: list[str], env: dict[str, str]) -> int:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--timeout={TEST_TIMEOUT}",
        *args,
    ]
    done = subprocess.run(command, cwd=copy, env=env, capture_output=True, check=False)
    return done.returncode


def use_tests_of(revision: str, copy: Path) -> None:
    """Replace the copy's tests by those of ``revision`` (the catalogue is read from here)."""
    shutil.rmtree(copy / "tests")
    archive = subprocess.run(
        ["git", "-c", "tar.umask=022", "archive", revision, "tests"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)


def judge(copy: Path, named: list[str], env: dict[str, str], *, named_only: bool) -> int:
    """pytest's exit status for the mutant in ``copy``: the named tests first, then the rest."""
    named = [n for n in named if (copy / n.split("::")[0]).exists()]
    verdict = pytest(copy, named, env) if named else 0
    if verdict == 0 and not named_only:
        rest = [f"--deselect={n}" for n in named if "::" in n]
        rest += [f"--ignore={n}" for n in named if "::" not in n]
        verdict = pytest(copy, rest, env)
    return verdict


def git_apply(copy: Path, patch: Path, *, reverse: bool = False) -> bool:
    command = ["git", "apply", "--recount", *(["-R"] if reverse else []), str(patch)]
    done = subprocess.run(command, cwd=copy, capture_output=True, check=False)
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="patch names or numbers to run (default: all)")
    parser.add_argument(
        "--named-only",
        action="store_true",
        help="run only the tests each patch names (quick; a survivor may still be killed later)",
    )
    parser.add_argument(
        "--tests-from",
        metavar="REV",
        help="judge with the tests of git revision REV (to see what a change of the tests adds)",
    )
    args = parser.parse_args()
    patches = sorted(HERE.glob("[0-9][0-9]-*.patch"))
    if args.only:
        patches = [p for p in patches if any(p.name.startswith(o) for o in args.only)]
    started = time.monotonic()
    killed = 0
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="omar-bulk-mutants-") as scratch:
        copy = Path(scratch) / "tree"
        copy_tree(copy)
        if args.tests_from:
            use_tests_of(args.tests_from, copy)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(copy)  # the copy's omar_bulk, also for tests' subprocesses
        env.pop("PYTEST_ADDOPTS", None)
        where = subprocess.run(
            [sys.executable, "-c", "import omar_bulk; print(omar_bulk.__file__)"],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(copy)):
            print(f"the copy's tests would import omar_bulk from {where}", file=sys.stderr)
            return 2
        # A named test that fails without any mutant would "kill" every mutant naming it.
        named = sorted({n for p in patches for n in tests_of(p)})
        named = [n for n in named if (copy / n.split("::")[0]).exists()]
        if named and pytest(copy, named, env) != 0:
            print("the named tests fail on the unchanged copy: fix that first", file=sys.stderr)
            return 2
        print(f"unchanged copy: the named tests pass ({time.monotonic() - started:.0f} s)")
        for patch in patches:
            name = patch.stem
            if not git_apply(copy, patch):
                print(f"does-not-apply  {name}", flush=True)
                missed.append(name)
                continue
            clock = time.monotonic()
            try:
                verdict = judge(copy, tests_of(patch), env, named_only=args.named_only)
            except BaseException:
                git_apply(copy, patch, reverse=True)
                raise
            if not git_apply(copy, patch, reverse=True):
                print(f"cannot undo {name}: stopping", file=sys.stderr)
                return 2
            seconds = time.monotonic() - clock
            # 1: tests failed; 2: interrupted (-x stops, a timeout); 3/4: internal or usage
            # errors. Only failing tests kill a mutant; an error in the run is reported.
            if verdict in (1, 2):
                killed += 1
                print(f"killed          {name}  ({seconds:.0f} s)", flush=True)
            elif verdict == 0:
                missed.append(name)
                print(f"SURVIVED        {name}  ({seconds:.0f} s)", flush=True)
            else:
                missed.append(name)
                print(f"ERROR {verdict}        {name}  (pytest could not run)", flush=True)
    total = len(patches)
    minutes = (time.monotonic() - started) / 60
    if missed:
        print(f"not killed: {', '.join(missed)}")
    print(f"semantic mutants: {killed}/{total} killed ({minutes:.1f} min)")
    return 0 if killed == total else 1


def _check_names() -> None:
    for patch in HERE.glob("*.patch"):
        if not re.fullmatch(r"\d\d-[a-z0-9-]+\.patch", patch.name):
            raise SystemExit(f"{patch.name}: name it NN-what-breaks.patch")


if __name__ == "__main__":
    _check_names()
    sys.exit(main())
