"""Plain-text tables for the CLI and the demo (no dependency, fixed-width, wraps nothing).

Columns are padded by display width (a CJK character takes two columns, a combining mark none);
numbers are written in fixed point with at most four decimals (more for a value below 0.0001,
which would round to 0), in exponent notation only below 10^-10.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence


def table(headers: Sequence[object], rows: Iterable[Sequence[object]], max_width: int = 70) -> str:
    max_width = max(1, max_width)
    heads = [_cell(h, max_width).upper() for h in headers]
    cells = []
    for row in rows:
        row = [_cell(v, max_width) for v in row]
        cells.append(row + [""] * (len(heads) - len(row)))  # a short row is padded
    widths = [_width(h) for h in heads]
    for row in cells:
        for i, v in enumerate(row):
            if i == len(widths):  # a row longer than the headers gets columns of its own
                widths.append(0)
                heads.append("")
            widths[i] = max(widths[i], _width(v))
    out = [_join(heads, widths), "  ".join("-" * w for w in widths)]
    out.extend(_join(row + [""] * (len(widths) - len(row)), widths) for row in cells)
    if not cells:
        out.append("(none)")
    return "\n".join(out)


def _join(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v + " " * (w - _width(v)) for v, w in zip(cells, widths)).rstrip()


def _cell(value: object, max_width: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = _number(value)
    else:
        text = str(value)
    text = " ".join(text.split())
    if _width(text) <= max_width:
        return text
    out, used = [], 0
    for ch in text:  # cut by display width, leaving room for the ellipsis
        w = _char_width(ch)
        if used + w > max_width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _number(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value and abs(value) < 0.0001:  # too small for four decimals: shown, not rounded to 0
        small = f"{value:.10f}".rstrip("0").rstrip(".")
        return small if small not in ("0", "-0") else f"{value:.2e}"
    return f"{value:,.4f}".rstrip("0").rstrip(".")


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text: str) -> int:
    return sum(_char_width(ch) for ch in text)
