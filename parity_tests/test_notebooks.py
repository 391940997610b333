"""The notebooks run from top to bottom, and the parity figures they print hold: every per-layer
table row and every "max abs error X (bound Y)" line of the executed notebook's outputs is
within its bound, and every table says PASS. (Their cells assert parity too; this reads what a
reader of the notebook sees.)

A cell tagged ``timing`` (a table of seconds per step that asserts nothing) is left out unless
``ZOO_NOTEBOOK_TIMINGS=1``: the style-transfer notebook's backbone timings were two fifths of
its CI time, and ``scripts/style_benchmark.py`` measures the same against the peers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))

#: ``ParityReport.table()`` header: "<name> on <target>: PASS" ("<name> (gradients) on ...")
HEADER = re.compile(
    r"^(?P<name>\S+)(?: \(gradients\))? on (?P<target>[\w-]+): (?P<verdict>PASS|FAIL)\s*$", re.M
)
#: ``ParityReport.table()`` row: label, shape, max abs, max rel, bound [, first-failure mark]
ROW = re.compile(
    r"^  (?P<label>\S.*?)\s+\([\d, ]*\)\s+(?P<abs>\S+)\s+(?P<rel>\S+)\s+(?P<bound>\d\.\de[-+]\d+)"
    r"(?P<mark>\s+<--.*)?\s*$",
    re.M,
)
#: a figure the notebooks print beside its bound
BOUNDED = re.compile(r"max abs error (?P<abs>\S+) \(bound (?P<bound>\S+)\)")


def _within(max_abs: str, bound: str) -> bool:
    """``max_abs <= bound`` as printed: the bound is rounded to its last printed digit, so half a
    unit of that digit is allowed."""
    mantissa, exponent = bound.lower().split("e")
    decimals = len(mantissa.partition(".")[2])
    return float(max_abs) <= float(bound) + 0.5 * 10.0 ** (int(exponent) - decimals)


def _stdout(notebook) -> str:
    return "\n".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("name") == "stdout"
    )


def check_parity_figures(notebook) -> dict[str, int]:
    """Assert the parity figures printed in ``notebook``'s outputs; return how many of each
    kind were checked."""
    text = _stdout(notebook)
    headers = list(HEADER.finditer(text))
    rows = list(ROW.finditer(text))
    bounded = list(BOUNDED.finditer(text))
    assert headers, "no parity table in the outputs"
    assert all(h["verdict"] == "PASS" for h in headers), [h.group(0) for h in headers]
    assert any(h["target"].startswith("keras-") for h in headers), "no Keras table"
    assert len(rows) >= 10, f"only {len(rows)} parity table rows in the outputs"
    assert "<output" in "".join(r["label"] for r in rows), "no output row"
    over = [r.group(0) for r in rows if r["mark"] or not _within(r["abs"], r["bound"])]
    assert not over, over
    assert bounded, "no bounded max abs error line in the outputs"
    over = [b.group(0) for b in bounded if not _within(b["abs"], b["bound"])]
    assert not over, over
    return {"tables": len(headers), "rows": len(rows), "bounded": len(bounded)}


def test_printed_bound_allows_its_rounding():
    assert _within("9.520e-05", "9.5e-05") and _within("1.0e-04", "1.0e-04")
    assert not _within("9.560e-05", "9.5e-05") and not _within("nan", "1.0e-04")


#: notebooks CI leaves to ``-m slow -k notebook``: two and a half minutes each on the two CI cores
#: (four frameworks' imports, conversions, Flax's and Keras' compiles), a fifth of the TensorFlow
#: pass, and every figure they print is held by its own test (test_fid, families/test_dfgan,
#: test_mask_generator, test_sam_predictor)
SLOW = {"gan_fid_walkthrough", "sam_walkthrough"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=p.stem, marks=pytest.mark.slow if p.stem in SLOW else ())
        for p in NOTEBOOKS
    ],
)
def test_notebook_runs_and_its_parity_figures_hold(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    notebook = nbformat.read(path, as_version=4)
    if os.environ.get("ZOO_NOTEBOOK_TIMINGS") != "1":
        notebook.cells = [c for c in notebook.cells if "timing" not in c.metadata.get("tags", [])]
    for cell in notebook.cells:  # what is checked below is what this run printed
        cell.pop("outputs", None)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure
    images = [
        out
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert images, "the error-per-block plot was not drawn"
    check_parity_figures(notebook)
