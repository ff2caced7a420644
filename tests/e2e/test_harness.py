"""The test harness itself: private temporary folders, and skips that CI does not accept."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_each_test_has_temporary_folders_of_its_own(tmp_path: Path, private_tmpdir: Path) -> None:
    """Files a killed omar-bulk left in the shared temporary folder are never looked at."""
    assert Path(tempfile.gettempdir()) == private_tmpdir
    assert private_tmpdir.is_relative_to(tmp_path)
    child = subprocess.run(
        [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert Path(child.stdout.strip()) == private_tmpdir


def _run_a_skipping_suite(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (folder / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
    )
    (folder / "test_skips.py").write_text(
        "import pytest\n\n\ndef test_needs_a_tool():\n    pytest.skip('needs a tool')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("ci", "code"), [(None, 0), ("true", 1)])
def test_a_skip_is_a_failure_in_ci_only(tmp_path: Path, ci: str | None, code: int) -> None:
    """Outside CI a missing tool skips with its reason; in CI the same skip fails the run."""
    result = _run_a_skipping_suite(tmp_path, ci)
    assert result.returncode == code, result.stdout + result.stderr
    if ci:
        assert "skipped in CI, where every test must run: needs a tool" in result.stdout
        assert "1 failed" in result.stdout
    else:
        assert "1 skipped" in result.stdout


def test_the_supported_pythons_are_the_tested_ones() -> None:
    """pyproject's classifiers name exactly the versions ``make test-all`` runs, and the
    package ships its ``py.typed`` marker so library users type-check against it."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    classified = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in project["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    tested = re.search(r"^PYTHON_VERSIONS := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert tested is not None
    assert classified == sorted(tested.group(1).split())
    assert project["project"]["requires-python"] == f">={classified[0]}"
    assert (ROOT / "omar_bulk" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["omar_bulk"]
