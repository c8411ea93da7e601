"""The one table renderer (vitdistill.utils.tables) against tables written out by hand."""

from __future__ import annotations

import csv
import io

import pytest

from vitdistill.utils.tables import render

ROWS = [
    {"Model": "ViT-Tiny", "Dims": 192, "SVD 99%": 52.0, "share": 0.125, "note": None},
    {"Model": "CaiT_S24", "Dims": 384, "SVD 99%": 121.5, "share": 1 / 3, "note": "50% & up"},
]


def test_markdown():
    assert render(ROWS, "md") == (
        "| Model | Dims | SVD 99% | share | note |\n"
        "|:--|--:|--:|--:|--:|\n"
        "| ViT-Tiny | 192 | 52 | 0.125 | - |\n"
        "| CaiT_S24 | 384 | 121.5 | 0.333333 | 50% & up |\n"
    )


def test_csv_reads_back():
    got = list(csv.reader(io.StringIO(render(ROWS, "csv"))))
    assert got == [
        ["Model", "Dims", "SVD 99%", "share", "note"],
        ["ViT-Tiny", "192", "52", "0.125", "-"],
        ["CaiT_S24", "384", "121.5", "0.333333", "50% & up"],
    ]


def test_latex_escapes_and_aligns():
    tex = render(ROWS, "tex", caption="a_b ± c").splitlines()
    assert tex[2] == "\\caption{a\\_b $\\pm$ c}"
    assert tex[3] == "\\begin{tabular}{lrrrr}"
    assert tex[5] == "Model & Dims & SVD 99\\% & share & note \\\\"
    assert tex[8] == "CaiT\\_S24 & 384 & 121.5 & 0.333333 & 50\\% \\& up \\\\"


def test_plain_pads_text_left_and_numbers_right():
    rows = [{"model": "a", "params": "5,717,416"}, {"model": "longer_name", "params": "12"}]
    assert render(rows, "plain", text_cols=("model",)).splitlines() == [
        "model        params",
        "-----------  ---------",
        "a            5,717,416",
        "longer_name         12",
    ]


def test_empty_and_unknown_format():
    assert render([], "md") == ""
    with pytest.raises(ValueError, match="unknown table format"):
        render(ROWS, "html")
