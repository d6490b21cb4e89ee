"""Spreadsheet-formula neutralisation (CSV injection) of every CSV the app and the command line write."""
from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser_core.export import neutralise, to_csv
from ser_core.segments import segment_table

REPO = Path(__file__).resolve().parents[1]
FORMULAS = ["=1+1", "@SUM(1)", "+1+1", "-2+3", "=HYPERLINK(\"http://evil.example\",\"x\")",
            "+cmd|' /C calc'!A0", "\t=1+1", "\r=1+1", "-", "@", "="]


def read_back(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("cell", FORMULAS)
def test_a_cell_a_spreadsheet_would_run_gets_an_apostrophe(cell):
    assert neutralise(cell) == "'" + cell
    (header, row), = [read_back(to_csv(pd.DataFrame({"label": [cell], "uar": [0.5]})))]
    assert row == ["'" + cell, "0.5"]


@pytest.mark.parametrize("value", [-0.25, 0.5, -3, np.float32(-1.5), np.int64(-2), True, None, float("nan"), "-0.25",
                                   "+1e-3", "-.5", "angry", "0.512 ± 0.031", "a=b", " =1"])
def test_numbers_and_plain_text_stay_as_they_are(value):
    assert neutralise(value) is value


def test_numeric_columns_are_written_as_numbers_and_column_names_are_neutralised():
    table = pd.DataFrame({"uar": [-0.25, 0.5], "=bad": ["x", "=1+1"], "k": [4, 5]})
    rows = read_back(to_csv(table))
    assert rows == [["uar", "'=bad", "k"], ["-0.25", "x", "4"], ["0.5", "'=1+1", "5"]]
    back = pd.read_csv(io.StringIO(to_csv(table)))
    assert back["uar"].dtype == float and back["k"].dtype == int  # numbers stay numbers


def test_the_demos_segment_table_with_a_hostile_label():
    """A model trained on a CSV corpus whose labels are formulas: its answers reach the segments CSV inert."""
    segments = [{"start_s": 0.0, "end_s": 2.5, "speech": True, "ensemble": {"=1+1": 0.9, "@SUM(1)": 0.1}},
                {"start_s": 3.0, "end_s": 4.0, "speech": False, "reason": "-not speech"}]
    rows = read_back(to_csv(pd.DataFrame(segment_table(segments))))
    cells = [c for row in rows[1:] for c in row]
    assert "'=1+1" in cells and "'-not speech" in cells
    assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for c in cells)


def test_every_csv_the_app_and_cli_write_goes_through_to_csv():
    """A contract over the source: no page, shared app module or library module calls DataFrame.to_csv or a
    csv.writer itself (ser_core.export alone does)."""
    files = [REPO / "streamlit_app.py", REPO / "app_shared.py", *REPO.glob("app_pages/*.py"),
             *REPO.glob("ser_core/**/*.py")]
    offenders = []
    for f in files:
        if f.name == "export.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            csv_writer = node.attr in ("writer", "DictWriter") and getattr(node.value, "id", None) == "csv"
            if node.attr == "to_csv" or csv_writer:
                offenders.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
