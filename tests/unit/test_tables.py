"""The CLI's and the demo's plain-text tables: numbers as people read them, columns that line up."""

from __future__ import annotations

import unicodedata

import pytest

from scheduler.tables import table


def _display_width(text: str) -> int:
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


@pytest.mark.parametrize("value, shown", [
    (1234.56, "1,234.56"), (100000.0, "100,000"), (98765.4321, "98,765.4321"), (0.25, "0.25"), (3.0, "3"),
    (0.00004, "0.00004"), (0.0, "0"), (-1.5, "-1.5"), (1e-12, "1.00e-12"),
], ids=str)
def test_numbers_are_written_in_fixed_point(value, shown):
    """Floats were written with .4g: 1234.56 became 1235, a 100,000 quota 1e+05, 4e-05 GPU-hours 4e-05."""
    assert table(["n"], [[value]]).splitlines()[2] == shown


def test_columns_line_up_by_display_width():
    """Widths were counted in characters: a CJK name (two columns each) or a combining accent broke them."""
    lines = table(["name", "state"], [["数据集", "ok"], ["e\u0301tude", "ok"], ["plain", "ok"]]).splitlines()
    starts = {_display_width(line[:line.index("ok")]) for line in lines[2:]}
    assert len(starts) == 1, lines


def test_odd_rows_and_headers_do_not_break_the_table():
    """A row longer than the headers raised IndexError, a None header TypeError; max_width 0 was not held."""
    text = table(["a", None], [[1, 2, 3], ["x"]])
    assert text.splitlines()[0].split() == ["A", "-"] and "3" in text.splitlines()[2]
    assert table(["long"], [["abcdefgh"]], max_width=0).splitlines()[2] == "…"
    assert table(["n"], [["数据集数据集"]], max_width=5).splitlines()[2] == "数据…"
