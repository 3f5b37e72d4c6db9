"""The summary tables and warnings of reports, as data (reports/tables.py, reports/notes.py)."""

from __future__ import annotations

import pytest
from rich.console import Console

from clipsharp.cli.output import draw
from clipsharp.errors import ReportError
from clipsharp.reports.notes import chance_warnings, selection_warnings, warnings_of
from clipsharp.reports.tables import Mark, markdown, tables_of


def interpolate_doc(shifted_accuracy: float = 0.5, name: str = "shifted") -> dict:
    """An interpolate report of two datasets on a three-point path, ten classes each."""
    datasets = [
        {"name": "in_dist", "role": "id", "num_classes": 10},
        {"name": name, "role": "ood", "num_classes": 10},
    ]
    path = [
        {
            "alpha": alpha,
            "metrics": {
                "in_dist": {"accuracy": 0.5 + 0.4 * alpha, "num_examples": 1000},
                name: {"accuracy": shifted_accuracy, "num_examples": 1000},
            },
        }
        for alpha in (0.0, 0.5, 1.0)
    ]
    summary = {
        "in_dist": {"best_alpha": 1.0, "best_accuracy": 0.9, "gain": 0.4, "depth": 0.0,
                    "barrier": -0.1, "failure_mode": None},
        name: {"best_alpha": 0.5, "best_accuracy": shifted_accuracy, "gain": -0.0125,
               "depth": 0.02, "barrier": 0.01, "failure_mode": True},
    }  # fmt: skip
    return {
        "command": "interpolate",
        "inputs": {"datasets": datasets},
        "results": {"path": path},
        "summary": summary,
    }


def test_path_table_holds_each_number_and_marks_the_failure():
    (table,) = tables_of(interpolate_doc())
    rows = {row[0]: row for row in table.rows}
    assert rows["in_dist"][1:7] == ("id", "0.500", "0.900", "1", "0.900", "+0.400")
    assert rows["shifted"][6] == "-0.013" and rows["shifted"][9] == Mark("FAILURE", "alarm")
    assert rows["in_dist"][9] == "-"  # failure mode is judged on OOD sets only


def test_markdown_escapes_pipes_and_right_aligns_numbers():
    text = markdown(tables_of(interpolate_doc(name="a|b")))
    lines = text.splitlines()
    assert lines[0] == "**interpolate: α 0 = zero-shot, 1 = fine-tuned**"
    assert lines[3] == "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert any(line.startswith("| a\\|b | ood |") and "| FAILURE |" in line for line in lines)


def test_drawn_table_shows_names_as_given_with_no_markup_read():
    doc = interpolate_doc(name="[bold]x[/]")
    out = Console(width=80, record=True)
    for table in tables_of(doc):
        out.print(draw(table))
    assert "[bold]x[/]" in out.export_text()


def test_a_report_without_a_table_is_refused_naming_it():
    with pytest.raises(ReportError, match="r.json is a 'convert' report"):
        tables_of({"command": "convert"}, "r.json")


def test_chance_warning_only_where_both_ends_are_at_chance():
    assert chance_warnings(interpolate_doc(0.5)) == []
    (warning,) = chance_warnings(interpolate_doc(0.1))  # chance: 1/10
    assert warning.startswith("shifted: the zero-shot and the fine-tuned model are both")
    assert "chance 0.100" in warning
    assert warnings_of(interpolate_doc(0.1)) == [warning]


def test_selection_warning_only_for_test_set_selection():
    summary = {"alpha": 0.4, "dataset": "shifted", "test_set_selection": True}
    (warning,) = selection_warnings({"summary": summary})
    assert warning.startswith("alpha 0.4 was chosen on the OOD set shifted")
    assert selection_warnings({"summary": {**summary, "test_set_selection": False}}) == []
