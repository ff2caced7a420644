"""The request URLs follow the download specification to the letter."""

from __future__ import annotations

from datetime import date
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omar_bulk.plan import Item
from omar_bulk.protocol import (
    PROD_URL,
    normalise_base_url,
    parse_relative_path,
    quote_id,
    relative_path,
    request_url,
    wire_date,
)

SPEC_SAMPLE = (
    "https://omar-online.caiso.com:444/getMDEF.jsp?requestedFormat=download&datasourceType=SQMD"
    "&groupOrMeter=group&selectedMeters=123&startDate=07%2F05%2F2000&endDate=07%2F08%2F2000"
    "&timeType=PST&fileFormat=MDEF&group=123"
)


def test_group_request_matches_the_specification_sample_exactly() -> None:
    """Section 3.1's sample URL, character for character."""
    item = Item("group", "123", date(2000, 7, 5), date(2000, 7, 8), "mdef", "PST")
    assert request_url(PROD_URL, item) == SPEC_SAMPLE


def test_meter_request_leaves_group_present_but_empty() -> None:
    item = Item("meter", "MTR9", date(2021, 12, 1), date(2021, 12, 31), "csv", "DST")
    assert request_url(PROD_URL, item) == (
        "https://omar-online.caiso.com:444/getSQMDCsvForDownload.jsp?requestedFormat=download"
        "&datasourceType=SQMD&groupOrMeter=meter&selectedMeters=MTR9&startDate=12%2F01%2F2021"
        "&endDate=12%2F31%2F2021&timeType=DST&fileFormat=CSV&group="
    )


def test_ids_are_percent_encoded_where_they_need_it() -> None:
    item = Item("group", "A B&C=D%", date(2020, 1, 1), date(2020, 1, 2), "mdef", "PST")
    url = request_url(PROD_URL, item)
    assert "selectedMeters=A%20B%26C%3DD%25&" in url
    assert url.endswith("group=A%20B%26C%3DD%25")


def test_plain_ids_are_left_as_they_are() -> None:
    item = Item("meter", "ABC_123-x.y~z", date(2020, 1, 1), date(2020, 1, 2), "mdef", "PST")
    assert "selectedMeters=ABC_123-x.y~z&" in request_url(PROD_URL, item)


@given(st.dates(min_value=date(1000, 1, 1)))
def test_wire_dates_are_month_day_year_with_encoded_slashes(day: date) -> None:
    text = wire_date(day)
    month, rest = text.split("%2F", 1)
    dd, year = rest.split("%2F")
    assert (int(year), int(month), int(dd)) == (day.year, day.month, day.day)
    assert len(month) == 2 and len(dd) == 2 and len(year) == 4


def test_output_layout() -> None:
    item = Item("meter", "M1", date(2020, 2, 1), date(2020, 2, 29), "csv", "DST")
    assert str(relative_path(item)) == "meter/M1/M1_20200201_20200229_DST.csv"
    item = Item("group", "G", date(2020, 1, 1), date(2020, 1, 31), "mdef", "PST")
    assert str(relative_path(item)) == "group/G/G_20200101_20200131_PST.mdef"


@given(
    st.text(max_size=30),
    st.text(max_size=30),
    st.sampled_from(["downloaded", "failed", "empty", "skipped", "revised", "unchanged"]),
    st.integers(0, 10**12),
    st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
    st.integers(0, 100),
    st.one_of(st.none(), st.text(max_size=60)),
)
def test_report_lines_are_the_json_of_the_report_entry(
    url: str, path: str, status: str, size: int, sha: str | None, attempts: int, error: str | None
) -> None:
    """The hand-written per-item JSON (it runs once per file) equals the generic encoding."""
    import json
    from pathlib import Path

    from omar_bulk.results import ItemResult

    item = Item("meter", "M1", date(2024, 1, 1), date(2024, 1, 2), "mdef", "PST")
    result = ItemResult(item, url, Path(path or "."), status, size, sha, attempts, error)
    assert json.loads(result.as_json()) == result.as_report()


@pytest.mark.parametrize(
    "item",
    [
        Item("meter", "M1", date(2024, 1, 1), date(2024, 1, 31), "mdef", "PST"),
        Item("group", "G_7", date(2023, 12, 25), date(2024, 1, 7), "csv", "DST"),
        Item("meter", "A_B", date(1, 1, 1), date(9999, 12, 31), "mdef", "DST"),
    ],
)
def test_a_layout_path_reads_back_as_its_item(item: Item) -> None:
    """The journal's rebuild reads items back from file names: every name it writes."""
    assert parse_relative_path(relative_path(item)) == item


@pytest.mark.parametrize(
    "path",
    [
        "meter/M1",  # too short
        "x/meter/M1/M1_20240101_20240131_PST.mdef",  # too deep
        "device/M1/M1_20240101_20240131_PST.mdef",  # no such kind
        "meter/M1/M1_20240101_20240131_PST.txt",  # no such format
        "meter/M1/M1_20240101_20240131_PST",  # no extension
        "meter/M1/M2_20240101_20240131_PST.mdef",  # another id's file
        "meter/M1/M1_20240101_20240131_UTC.mdef",  # no such time type
        "meter/M1/M1_20240101_PST.mdef",  # one date
        "meter/M1/M1_20241301_20241331_PST.mdef",  # no such dates
        "meter/M1/M1_20240101_2024013_PST.mdef",  # not written this way
        "meter/M1/M1_2024-01-01_20240131_PST.mdef",
        "meter/M1/M1_20240101_20240131_PST.mdef.part",
    ],
)
def test_other_paths_are_not_items(path: str) -> None:
    assert parse_relative_path(PurePosixPath(path)) is None


def test_urls_quote_ids_and_sit_under_one_slash() -> None:
    assert quote_id("a b/c~d_e.f-g") == "a%20b%2Fc~d_e.f-g"
    assert normalise_base_url("https://h:444") == "https://h:444/"
    assert normalise_base_url("https://h:444///") == "https://h:444/"
    item = Item("meter", "a/b", date(2024, 2, 1), date(2024, 2, 29), "csv", "DST")
    assert request_url("https://h/", item) == (
        "https://h/getSQMDCsvForDownload.jsp?requestedFormat=download&datasourceType=SQMD"
        "&groupOrMeter=meter&selectedMeters=a%2Fb&startDate=02%2F01%2F2024"
        "&endDate=02%2F29%2F2024&timeType=DST&fileFormat=CSV&group="
    )


@pytest.mark.parametrize(
    ("base", "normal"),
    [
        ("https://omar.example:444", "https://omar.example:444/"),
        ("https://omar.example:444///", "https://omar.example:444/"),
        ("https://omar.example/omarX/", "https://omar.example/omarX/"),
        ("https://omar.example/omarX", "https://omar.example/omarX/"),
    ],
)
def test_a_base_url_ends_in_exactly_one_slash(base: str, normal: str) -> None:
    assert normalise_base_url(base) == normal


@pytest.mark.parametrize("ident", ["M.1", "a.b.c", "G_1.x", "v1.mdef"])
def test_dotted_ids_read_back_from_their_path(ident: str) -> None:
    item = Item("meter", ident, date(2024, 1, 1), date(2024, 1, 31), "csv", "DST")
    assert parse_relative_path(relative_path(item)) == item
    assert parse_relative_path(PurePosixPath(f"meter/{ident}/{ident}.csv")) is None
