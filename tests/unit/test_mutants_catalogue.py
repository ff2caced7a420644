"""The catalogue of semantic mutants (``tests/mutants/``) stays usable: every patch says what a
user would see and which tests catch it, touches the package only, and is listed in the
folder's README. (Whether each is killed is ``make mutants``'s job, not this file's.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

HERE = Path(__file__).parent.parent / "mutants"
PATCHES = sorted(HERE.glob("*.patch"))


def test_the_catalogue_holds_at_least_40_mutants_numbered_once() -> None:
    numbers = [p.name[:2] for p in PATCHES]
    assert len(PATCHES) >= 40
    assert len(set(numbers)) == len(numbers), "two patches share a number"
    for patch in PATCHES:
        assert re.fullmatch(r"\d\d-[a-z0-9-]+\.patch", patch.name), patch.name


@pytest.mark.parametrize("patch", PATCHES, ids=[p.stem for p in PATCHES])
def test_each_mutant_says_what_a_user_sees_and_where_it_is_caught(patch: Path) -> None:
    text = patch.read_text(encoding="utf-8")
    head, _, diff = text.partition("diff --git ")
    sees = re.search(r"^Sees: (.+)$", head, re.M)
    tests = re.search(r"^Tests: (.+)$", head, re.M)
    assert sees and tests, "a patch starts with a Sees: and a Tests: line"
    for name in tests.group(1).split():
        assert (Path(__file__).parent.parent.parent / name.split("::")[0]).is_file(), name
    touched = re.findall(r"^\+\+\+ b/(\S+)", diff, re.M)
    assert touched and all(t.startswith("omar_bulk/") for t in touched), touched
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    assert f"| {patch.name[:2]} | `{patch.stem[3:]}` |" in readme
    assert sees.group(1) in readme
