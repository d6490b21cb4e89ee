"""Tables written for spreadsheets: every CSV the app and the command line write goes through :func:`to_csv`.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (``=HYPERLINK(...)``,
``@SUM(1)``, a DDE call), and one that starts with a tab or a carriage return may be read as one too. Labels,
speaker names, file names and parameters come from users, so each such text cell gets a leading apostrophe, as
OWASP's "CSV Injection" page recommends: the spreadsheet shows the text and runs nothing. Numbers stay numbers,
whether stored as numbers or as the text of one (``-0.25``).

>>> neutralise("=1+1"), neutralise("-0.25"), neutralise(-0.25)
("'=1+1", '-0.25', -0.25)
>>> to_csv(pd.DataFrame({"label": ["@SUM(1)"], "uar": [0.5]}))
"label,uar\\r\\n'@SUM(1),0.5\\r\\n"
"""
from __future__ import annotations

import re

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP: the characters a spreadsheet may run a cell from
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # the text of a number: no formula in it


def neutralise(value):
    """``value`` as a spreadsheet cell that runs nothing: text starting with one of ``FORMULA_STARTS`` (and not
    the text of a number) gets a leading ``'``; anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def to_csv(table: pd.DataFrame, **kwargs) -> str:
    """``table.to_csv(index=False, lineterminator="\\r\\n", **kwargs)`` with every cell and column name
    :func:`neutralise` d. RFC 4180's line ending also makes a cell holding a lone carriage return quoted (with
    pandas' ``"\\n"`` it was written bare, and a spreadsheet started a new row, and a formula, there)."""
    safe = table.map(neutralise).rename(columns=neutralise)
    return safe.to_csv(**{"index": False, "lineterminator": "\r\n", **kwargs})


__all__ = ["FORMULA_STARTS", "neutralise", "to_csv"]
