"""CSV cells a spreadsheet will not run as formulas.

Model output reaches spreadsheets: `herd export --format csv` writes answers, and an answer that
starts with `=`, `+`, `-` or `@` (or a tab or carriage return, which some spreadsheets skip before
reading one of those) is taken as a formula by Excel, LibreOffice and Google Sheets (CSV injection:
`=HYPERLINK(...)`, `=WEBSERVICE(...)`, DDE). Such a text cell gets a leading single quote, which
spreadsheets show as text and hide; the JSONL export keeps answers exactly as the model wrote them.
Numbers are written as numbers: a negative value is data, not a formula.
"""

from __future__ import annotations

from collections.abc import Mapping

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """`value`, with a leading `'` if it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_row(row: Mapping[str, object]) -> dict[str, object]:
    return {key: safe_cell(value) for key, value in row.items()}
