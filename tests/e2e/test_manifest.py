"""Manifests: what they plan, and a clear exit-2 message, naming file and line, for every error."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omar_bulk.errors import ManifestError
from omar_bulk.manifest import Defaults, adhoc_plan, load_manifest

from ..conftest import Cli

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


def csv_with_a_bad_byte_on_line(line: int, *, comment: bool = False) -> bytes:
    rows = [b"kind,id,start,end"]
    rows += [b"meter,M%d,2024-01-01,2024-01-31" % n for n in range(2, line)]
    rows.append(b"# caf\xe9 note" if comment else b"meter,CAF\xe9,2024-01-01,2024-01-31")
    rows.append(b"meter,LAST,2024-01-01,2024-01-31")
    return b"\n".join(rows) + b"\n"


@pytest.mark.parametrize("comment", [False, True], ids=["in a row", "in a comment"])
def test_a_csv_that_is_not_utf8_names_the_line_with_the_bad_byte(
    tmp_path: Path, comment: bool
) -> None:
    """Latin-1 on line 102, read in one block with the good lines: the error says 102, not 1."""
    path = write(tmp_path, "m.csv", csv_with_a_bad_byte_on_line(102, comment=comment))
    with pytest.raises(ManifestError, match=rf"^{path}:102: not a text file \(not UTF-8\)"):
        load_manifest(path)


def test_a_toml_that_is_not_utf8_names_the_line_too(tmp_path: Path) -> None:
    text = b"[[pull]]\nmeters = ['M1']\n# caf\xe9\nstart = 2024-01-01\nend = 2024-01-02\n"
    with pytest.raises(ManifestError, match=r":3: not a text file \(not UTF-8\)"):
        load_manifest(write(tmp_path, "m.toml", text))


def test_command_line_ids_are_stripped_like_manifest_cells() -> None:
    """' M1 ' on the command line is M1, as it is in a CSV cell or a TOML list."""
    plan = adhoc_plan(
        meters=[" M1 ", "M2\t"],
        groups=["  G1"],
        start="2024-01-01",
        end="2024-01-31",
        defaults=Defaults(),
    )
    assert sorted(item.id for item in plan) == ["G1", "M1", "M2"]


def test_a_blank_command_line_id_is_an_empty_id() -> None:
    with pytest.raises(ManifestError, match="empty id"):
        adhoc_plan(meters=["  "], groups=[], start="2024-01", end="2024-01", defaults=Defaults())


@pytest.mark.parametrize(
    ("ident", "message"),
    [("€" * 100, "longer than 200 bytes"), ("M\u202e1", "\\u202e"), ("M\u20281", "\\u2028")],
)
def test_manifest_ids_are_checked_in_bytes_and_characters(
    tmp_path: Path, ident: str, message: str
) -> None:
    """Both manifest forms, and the line that holds the id."""
    toml = f'[[pull]]\nmeters = ["{ident}"]\nstart = 2024-01-01\nend = 2024-01-02\n'
    csv_text = f"kind,id,start,end\nmeter,{ident},2024-01-01,2024-01-02\n"
    for name, text, line in (("m.toml", toml, 1), ("m.csv", csv_text, 2)):
        path = write(tmp_path, name, text.encode("utf-8"))
        with pytest.raises(ManifestError) as caught:
            load_manifest(path)
        assert str(caught.value).startswith(f"{path}:{line}:")
        assert message in str(caught.value)


def test_an_overlong_id_exits_2_before_any_request(cli: Cli) -> None:
    """Checked before the session opens: the server sees nothing, OUT is not created."""
    outcome = cli("fetch", "--meter", "€" * 100, "--start", "2024-01", "--end", "2024-01")
    assert outcome.exit_code == 2 and "longer than 200 bytes" in outcome.stderr
    assert cli.server is not None and cli.server.state.log == []
    assert not cli.out.exists()


def test_csv_cells_dates_and_chunks_read_the_same_on_every_row(tmp_path: Path) -> None:
    """Blanks around cells (spaces, tabs), a month written once as a start and once as an
    end, relative dates, chunk and format columns left empty or filled, comments and blank
    rows: each row means what it says, whatever the rows before it said."""
    text = (
        "Kind , ID,start,end,chunk,format\n"
        "meter,M1,2024-02,2024-02,,\n"
        " METER ,\tM2 ,2024-02,2024-02,week,CSV\n"
        "# meter,M3,2024-01-01,2024-01-31,,\n"
        ",,,,,\n"
        "group,G1,2024-01-30,2024-02,2d,\n"
        "meter,M4,-2d,today,none, mdef\n"
        "meter,M1,2024-02-01,2024-02-29,,\n"
    )
    plan = load_manifest(write(tmp_path, "m.csv", text), Defaults(today=date(2024, 3, 5)))
    shown = [(i.kind, i.id, str(i.start), str(i.end), i.format) for i in plan]
    assert shown == [
        ("meter", "M1", "2024-02-01", "2024-02-29", "mdef"),
        ("meter", "M2", "2024-02-01", "2024-02-04", "csv"),
        ("meter", "M2", "2024-02-05", "2024-02-11", "csv"),
        ("meter", "M2", "2024-02-12", "2024-02-18", "csv"),
        ("meter", "M2", "2024-02-19", "2024-02-25", "csv"),
        ("meter", "M2", "2024-02-26", "2024-02-29", "csv"),
        ("group", "G1", "2024-01-30", "2024-01-31", "mdef"),
        *[
            ("group", "G1", f"2024-02-{d:02d}", f"2024-02-{d + 1:02d}", "mdef")
            for d in range(1, 28, 2)
        ],
        ("group", "G1", "2024-02-29", "2024-02-29", "mdef"),
        ("meter", "M4", "2024-03-03", "2024-03-05", "mdef"),
    ]  # the last row plans M1's February again: dropped as a duplicate
    assert plan.survey() == len(shown) == 23


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("meter,M1,2024-01-01,2024-01-31,fortnight", "unknown chunk 'fortnight'"),
        ("meter,M1,2024-01-01,2024-01-31,0d", "unknown chunk '0d'"),
        ("meter,M1,2024-02,2024-01,", "end 2024-01-31 is before start 2024-02-01"),
        ("meter,M\u202e1,2024-01-01,2024-01-31,", "control, format or line-separator"),
        ("meter,\u00e9" * 1 + "x" * 200 + ",2024-01-01,2024-01-31,", "longer than 200 bytes"),
    ],
)
def test_a_bad_row_after_good_ones_names_its_own_line(
    tmp_path: Path, row: str, message: str
) -> None:
    """Dates and chunk sizes remembered from earlier rows never hide a later row's error."""
    good = "meter,M0,2024-01-01,2024-01-31,month\n" * 3
    path = write(tmp_path, "m.csv", f"kind,id,start,end,chunk\n{good}{row}\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith(f"{path}:5: ") and message in str(caught.value)
