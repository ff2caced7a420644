"""Manifests: what they plan, and a clear exit-2 message, naming file and line, for every error."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omar_bulk.errors import ManifestError
from omar_bulk.manifest import Defaults, load_manifest

from .conftest import Cli

GOOD_TOML = """\
format = "csv"
chunk = "month"

[[pull]]
meters = ["M1", "M2"]
groups = ["G1"]
start = 2024-01-15
end = 2024-03-02

[[pull]]
meters = ["M3"]
start = 2023-12-01
end = 2023-12-31
format = "mdef"
time_type = "DST"
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_toml_crosses_each_id_with_its_pull_and_applies_defaults(tmp_path: Path) -> None:
    plan = load_manifest(write(tmp_path, "m.toml", GOOD_TOML))
    items = list(plan)
    assert plan.survey() == len(items) == 3 * 3 + 1
    m3 = [i for i in items if i.id == "M3"]
    assert [(i.format, i.time_type) for i in m3] == [("mdef", "DST")]
    g1 = [i for i in items if i.id == "G1"]
    assert {i.kind for i in g1} == {"group"} and {i.format for i in g1} == {"csv"}
    assert g1[0].start == date(2024, 1, 15) and g1[-1].end == date(2024, 3, 2)


def test_csv_rows_with_optional_columns(tmp_path: Path) -> None:
    text = (
        "kind,id,start,end,format,time_type\n"
        "meter,M1,2024-01-01,2024-02-29,csv,DST\n"
        "# a comment line\n"
        "\n"
        "GROUP,G7,2024-02-10,2024-02-10,,\n"
    )
    plan = load_manifest(write(tmp_path, "m.csv", text), Defaults(format="mdef"))
    items = list(plan)
    assert [(i.kind, i.id, i.format, i.time_type) for i in items] == [
        ("meter", "M1", "csv", "DST"),
        ("meter", "M1", "csv", "DST"),
        ("group", "G7", "mdef", "PST"),
    ]


def test_a_csv_with_a_byte_order_mark_and_crlf_lines(tmp_path: Path) -> None:
    text = "\ufeffkind,id,start,end\r\nmeter,M1,2024-01-01,2024-01-31\r\n"
    assert load_manifest(write(tmp_path, "m.csv", text.encode("utf-8"))).survey() == 1


BAD_TOML = [
    ("[[pull]]\nmeters = ['M1']\nstart = 2024-13-01\nend = 2024-01-02\n", 3, "TOML syntax"),
    ("[[pull]]\nmeters = ['M1']\nstart = 2024-02-01\nend = 2024-01-02\n", 1, "before start"),
    ("x = 1\n[[pull]]\nmeters = ['M1']\n", 1, "unknown key 'x'"),
    ("\n[[pull]]\nmeter = ['M1']\nstart = 2024-01-01\nend = 2024-01-02\n", 2, "meters or groups"),
    ("[[pull]]\nmeters = ['a/b']\nstart = 2024-01-01\nend = 2024-01-02\n", 1, "'/'"),
    ("[[pull]]\nmeters = ['a\\\\b']\nstart = 2024-01-01\nend = 2024-01-02\n", 1, "'/'"),
    ("[[pull]]\nmeters = ['..']\nstart = 2024-01-01\nend = 2024-01-02\n", 1, "'..'"),
    ('[[pull]]\nmeters = ["a\\u0001"]\nstart = 2024-01-01\nend = 2024-01-02\n', 1, "control"),
    ("[[pull]]\nmeters = ['M1']\nend = 2024-01-02\n", 1, "no start"),
    (
        "[[pull]]\nmeters = ['M1']\nstart = 2024-01-01\nend = 2024-01-02\nformat = 'xml'\n",
        1,
        "unknown format",
    ),
    (
        "[[pull]]\nmeters = ['M1']\nstart = 2024-01-01\nend = 2024-01-02\ntime_type = 'UTC'\n",
        1,
        "unknown time type",
    ),
    (
        "[[pull]]\nmeters = ['M1']\nstart = 2024-01-01T10:00:00\nend = 2024-01-02\n",
        1,
        "time of day",
    ),
    (
        "[[pull]]\nmeters = ['M1']\nstart = 2024-01-01\nend = 2024-01-02\nchunk = 'yearly'\n",
        1,
        "unknown chunk",
    ),
    ("# nothing here\n", None, "nothing to fetch"),
    ("[[pull]]\nmeters = []\nstart = 2024-01-01\nend = 2024-01-02\n", 1, "no ids"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_TOML)
def test_toml_errors_name_the_file_and_line(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    path = write(tmp_path, "m.toml", text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}:" if line else str(path))


BAD_CSV = [
    ("kind,id,start\nmeter,M1,2024-01-01\n", 1, "lacks column end"),
    ("kind,id,start,end\nmeter,M1,2024-01-32,2024-02-01\n", 2, "bad date"),
    ("kind,id,start,end\nmeter,M1,2024-02-01,2024-01-01\n", 2, "before start"),
    (
        "kind,id,start,end\nmeter,M1,2024-01-01,2024-01-02\nbuilding,B,2024-01-01,2024-01-02\n",
        3,
        "unknown kind",
    ),
    ("kind,id,start,end\nmeter,../etc,2024-01-01,2024-01-02\n", 2, "'..'"),
    ("kind,id,start,end\nmeter,M1,2024-01-01\n", 2, "3 fields"),
    ("kind,id,start,end,colour\n", 1, "unknown column colour"),
    ("kind,id,start,end\n", None, "nothing to fetch"),
    ("", None, "nothing to fetch"),
    ("kind,id,start,end\nmeter,,2024-01-01,2024-01-02\n", 2, "empty id"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_CSV)
def test_csv_errors_name_the_file_and_line(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    path = write(tmp_path, "m.csv", text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}:" if line else str(path))


def test_a_binary_file_is_not_a_manifest(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", bytes(range(256)) * 4)
    with pytest.raises(ManifestError, match="not a text file"):
        load_manifest(path)


def test_a_huge_csv_line_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "kind,id,start,end\nmeter," + "x" * 50_000_000 + "\n")
    with pytest.raises(ManifestError, match=rf"^{path}:2: "):
        load_manifest(path)


def test_bad_manifests_exit_2_through_the_cli_without_a_request(tmp_path: Path, cli: Cli) -> None:
    path = write(tmp_path, "m.csv", "kind,id,start,end\nmeter,M1,2024-02-01,2024-01-01\n")
    outcome = cli("fetch", str(path))
    assert outcome.exit_code == 2
    assert f"{path}:2: end 2024-01-01 is before start 2024-02-01" in outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert cli.server is not None and cli.server.state.log == []
    assert not cli.out.exists()


def test_a_missing_manifest_exits_2(offline_cli: Cli, tmp_path: Path) -> None:
    outcome = offline_cli("fetch", str(tmp_path / "nope.toml"))
    assert outcome.exit_code == 2
    assert "no such file" in outcome.stderr


text_or_bytes = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [
                "kind,id,start,end",
                "meter,M1,2024-01-01,2024-01-31",
                "group,G,2024-02-01,x",
                "meter,a/b,2024-01-01,2024-01-02",
                ",,,",
                "kind,id",
                "\x00",
                '"unterminated',
            ]
        ),
        max_size=6,
    ).map("\n".join),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=text_or_bytes, suffix=st.sampled_from([".csv", ".toml", ".txt"]))
def test_any_input_either_plans_or_raises_a_manifest_error(
    tmp_path: Path, data: str | bytes, suffix: str
) -> None:
    path = tmp_path / f"fuzz{suffix}"
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(data)
    try:
        plan = load_manifest(path)
    except ManifestError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert plan.survey() >= 1
