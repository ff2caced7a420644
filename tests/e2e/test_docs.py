"""The documentation against the code: each rule is written once, and these tests fail when the
words and the program part ways (a metric missing from its table, a table broken by a stray
line, a link to nowhere, a test named in RELIABILITY.md that no longer exists)."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from omar_bulk import errors
from omar_bulk.results import OUTCOMES, Status
from omar_bulk.standin.server import FAULT_NAMES

from ..conftest import Cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "CHANGELOG.md"])
MONITORING = ROOT / "docs" / "monitoring.md"
CLI_DOC = ROOT / "docs" / "cli.md"
REPORT_DOC = ROOT / "docs" / "report.md"
RELIABILITY = ROOT / "docs" / "RELIABILITY.md"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines of Markdown outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def cells(row: str) -> list[str]:
    """A table row's cells: ``|`` splits, except escaped (``\\|``) or inside a code span."""
    found, current, code = [], "", False
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            current += body[index : index + 2]
            index += 2
            continue
        if char == "`":
            code = not code
        if char == "|" and not code:
            found.append(current.strip())
            current = ""
        else:
            current += char
        index += 1
    if current.strip():
        found.append(current.strip())  # text after the last pipe: a cell too many
    return found


def tables(text: str) -> list[tuple[int, list[str]]]:
    """Each table as (first line number, its rows), found by its delimiter row."""
    lines = _prose_lines(text)
    found = []
    for position, (number, line) in enumerate(lines):
        if position and re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", line.strip()):
            rows = [lines[position - 1][1], line]
            for _, following in lines[position + 1 :]:
                if not following.strip():
                    break
                rows.append(following)
            found.append((number - 1, rows))
    return found


# -- every table well formed ------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_row_has_the_header_s_cells_between_pipes(doc: Path) -> None:
    """A row with a cell too many or too few, or a sentence glued to a table (it renders as a
    row or vanishes), fails here with its line."""
    problems = []
    for first, rows in tables(_text(doc)):
        width = len(cells(rows[0]))
        for offset, row in enumerate(rows):
            line = first + offset
            if not (row.strip().startswith("|") and row.strip().endswith("|")):
                problems.append(f"{doc.name}:{line}: not a table row: {row[:80]!r}")
            elif len(cells(row)) != width:
                problems.append(f"{doc.name}:{line}: {len(cells(row))} cells, header has {width}")
    assert problems == []


def test_the_table_check_sees_a_stray_line_and_a_glued_sentence() -> None:
    """The check above can fail: both faults found in docs before are caught."""
    bad = "| a | b |\n|---|---|\nX\n| 1 | 2 | Glued sentence.\n| `x|y` | 3 |\n"
    rows = tables(bad)[0][1]
    assert [len(cells(r)) for r in rows] == [2, 2, 1, 3, 2]
    assert not rows[2].startswith("|")


# -- links ------------------------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of ``path``."""
    found = set()
    for _, line in _prose_lines(_text(path)):
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            found.add(title.replace(" ", "-"))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(doc: Path) -> None:
    problems = []
    for number, line in _prose_lines(_text(doc)):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:: not ours to check offline
            name, _, anchor = target.partition("#")
            where = (doc.parent / name).resolve() if name else doc
            if not where.exists():
                problems.append(f"{doc.name}:{number}: {target} does not exist")
            elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
                problems.append(f"{doc.name}:{number}: no heading #{anchor} in {where.name}")
    assert problems == []


# -- RELIABILITY.md names real tests ----------------------------------------------------------


def _test_functions() -> dict[str, set[str]]:
    """Test file name -> the test functions it defines (read, not imported)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(_text(path))
        names = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        }
        found.setdefault(path.name, set()).update(names)
    return found


def test_every_test_named_in_reliability_md_exists() -> None:
    """`file.py::name` (a trailing `…` or `*` makes a prefix, `[...]` are the parameters) must
    be a test."""
    defined = _test_functions()
    problems = []
    references = re.findall(r"`(test_\w+\.py)(?:::(test_\w+)(…|\*)?)?", _text(RELIABILITY))
    assert len(references) > 50  # the table is read at all
    for file_name, test, prefix in references:
        if file_name not in defined:
            problems.append(f"{file_name}: no such test file")
        elif test and not any(
            name == test or (prefix and name.startswith(test)) for name in defined[file_name]
        ):
            problems.append(f"{file_name}::{test}: no such test")
    assert problems == []


# -- tables against the code ------------------------------------------------------------------


def _metrics_table() -> dict[str, set[str]]:
    table = next(rows for _, rows in tables(_text(MONITORING)) if cells(rows[0])[0] == "metric")
    documented = {}
    for row in table[2:]:
        metric, labels = cells(row)[:2]
        documented[metric.strip("`")] = {label.strip("` ") for label in labels.split(",")}
    return documented


def _emitted(text: str) -> dict[str, set[str]]:
    """Metric name -> its label names, from Prometheus' text format."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = set(re.findall(r"(\w+)=\"", rest.partition("}")[0])) if rest else set()
            found.setdefault(name.split()[0], set()).update(labels)
    return found


def test_every_metric_the_code_emits_is_in_the_table_with_its_labels(
    cli: Cli, tmp_path: Path
) -> None:
    """A real fetch's --metrics, and status --prometheus-per-id with a manifest (so `missing`
    and the per-id series exist): the same names and labels as docs/monitoring.md's table."""
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-02-29\n')
    prom = tmp_path / "run.prom"
    assert cli("fetch", str(manifest), "--metrics", str(prom)).exit_code == 0
    emitted = _emitted(prom.read_text())
    bigger = tmp_path / "bigger.toml"
    bigger.write_text('[[pull]]\nmeters = ["M1", "M9"]\nstart = 2024-01-01\nend = 2024-02-29\n')
    status = cli("status", str(cli.out), "--manifest", str(bigger), "--prometheus-per-id")
    for name, labels in _emitted(status.stdout).items():
        emitted.setdefault(name, set()).update(labels)
    assert "omar_bulk_fetch_items" in emitted and "omar_bulk_coverage_id_files" in emitted
    assert _metrics_table() == emitted


def test_the_alert_rules_parse_and_name_documented_metrics() -> None:
    import yaml

    block = re.search(r"```yaml\n(.*?)```", _text(MONITORING), re.S)
    assert block is not None
    rules = [r for g in yaml.safe_load(block.group(1))["groups"] for r in g["rules"]]
    assert len(rules) == 2
    named = {m for r in rules for m in re.findall(r"omar_bulk_\w+", r["expr"])}
    assert named and named <= set(_metrics_table())


def test_the_exit_code_table_is_the_error_tree_s() -> None:
    section = _text(REPORT_DOC).split("## Exit codes", 1)[1]
    table = next(rows for _, rows in tables(section) if cells(rows[0])[0] == "code")
    documented = {int(cells(row)[0]) for row in table[2:]}
    codes = {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.OmarBulkError)
    }
    assert documented == codes | {0, 130}


def test_the_stand_in_s_fault_kinds_are_all_documented() -> None:
    text = " ".join(_text(CLI_DOC).split())
    listed = re.search(r"Fault kinds: `([^`]+)`", text)
    assert listed is not None
    assert listed.group(1).split() == list(FAULT_NAMES)


def test_the_report_example_and_statuses_match_what_a_run_writes(cli: Cli) -> None:
    one = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31"]
    assert cli("fetch", *one).exit_code == 0
    report = json.loads((cli.out / ".omar-bulk" / "last-run.json").read_text())
    readme = _text(REPORT_DOC).split("## The report", 1)[1]
    example = re.search(r"```json\n(.*?)```", readme, re.S)
    assert example is not None
    shown = example.group(1)
    for key in report["summary"]:
        assert f'"{key}"' in shown, key
    for key in report["items"][0]:
        assert f'"{key}"' in shown, key
    said = re.search(r"`status` is (.*?) or\s+`interrupted`", readme, re.S)
    assert said is not None
    statuses = [*re.findall(r"`(\w+)`", said.group(1)), "interrupted"]
    assert statuses == [*(s.value for s in OUTCOMES), Status.INTERRUPTED.value]


# -- the command line against docs/cli.md ------------------------------------------------------


def _commands() -> dict[str, list[Any]]:
    import typer.main

    from omar_bulk.cli import app

    group = typer.main.get_command(app)
    return {name: list(command.params) for name, command in group.commands.items()}  # type: ignore[attr-defined]


def _option_table(command: str) -> dict[str, list[str]]:
    """``## `COMMAND` ``'s table in docs/cli.md: each option or argument named in a row's
    first cell -> that row's cells."""
    section = _text(CLI_DOC).split(f"## `{command}`\n", 1)
    assert len(section) == 2, f"docs/cli.md has no section for {command}"
    body = section[1].split("\n## ", 1)[0]
    table = next(rows for _, rows in tables(body) if cells(rows[0])[:3] == [
        "option", "environment", "default"])  # fmt: skip
    found: dict[str, list[str]] = {}
    for row in table[2:]:
        row_cells = cells(row)
        names = re.findall(r"--[a-z][a-z0-9-]*", row_cells[0])
        names += re.findall(r"`([A-Z]+)`", row_cells[0])  # arguments: MANIFEST, OUT
        for name in names:
            found[name] = row_cells
    return found


def _shown(default: object) -> str:
    """A default as the docs write it: 120.0 as 120, a path as its name."""
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


@pytest.mark.parametrize("command", ["fetch", "check", "status", "verify", "demo", "serve"])
def test_every_option_of_the_command_line_is_in_docs_cli_md_with_default_and_variable(
    command: str,
) -> None:
    """Both directions: every option and argument ``--help`` knows has a row, with its
    environment variable and its default; every row names something the command knows."""
    params = _commands()[command]
    table = _option_table(command)
    known: set[str] = set()
    problems = []
    for param in params:
        names = [*param.opts, *getattr(param, "secondary_opts", [])]
        if param.param_type_name == "argument":
            names = [str(param.name).upper()]
        known.update(names)
        row = next((table[n] for n in names if n in table), None)
        if row is None:
            problems.append(f"{command} {names[0]}: no row in docs/cli.md")
            continue
        if param.envvar and param.envvar not in row[1]:
            problems.append(f"{command} {names[0]}: environment {param.envvar} not in {row[1]!r}")
        default = param.default
        if default not in (None, False) and _shown(default) not in row[2]:
            problems.append(f"{command} {names[0]}: default {_shown(default)} not in {row[2]!r}")
    problems += [
        f"{command}: docs/cli.md names {n}, unknown to the CLI" for n in table if n not in known
    ]
    assert problems == []


def test_the_option_check_tells_a_missing_row_and_a_wrong_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above can fail, both ways."""
    table = _option_table("verify")
    assert table["--json"][2] == ""
    altered = _text(CLI_DOC).replace(
        "| `--state-dir DIR` | `OMAR_STATE_DIR` | `OUT/.omar-bulk` | as for `status` |\n", ""
    )
    monkeypatch.setattr(sys.modules[__name__], "_text", lambda path: altered)
    with pytest.raises(AssertionError, match="no row"):
        test_every_option_of_the_command_line_is_in_docs_cli_md_with_default_and_variable("verify")
    wrong = altered.replace(
        "| `--timeout S` | | `10` | each network step |", "| `--timeout S` | | `15` | x |"
    )
    monkeypatch.setattr(sys.modules[__name__], "_text", lambda path: wrong)
    with pytest.raises(AssertionError, match="default 10 not in"):
        test_every_option_of_the_command_line_is_in_docs_cli_md_with_default_and_variable("check")
