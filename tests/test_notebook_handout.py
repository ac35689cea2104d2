"""Student notebooks are generated from the instructor notebooks and carry no answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from lab.notebook_handout import BEGIN, END, NOTEBOOKS, student_notebook, write_student_notebooks


def read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def solution_lines(cell: Any) -> list[str]:
    """The non-blank lines between the markers of an instructor cell (the answer)."""
    text = cell.source
    if BEGIN not in text:
        return [line for line in text.splitlines() if line.strip()]
    regions = re.findall(rf"{re.escape(BEGIN)}\n(.*?){re.escape(END)}", text, re.S)
    return [line.strip() for region in regions for line in region.splitlines() if line.strip()]


def is_solution(cell: Any) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution"))


def test_student_notebooks_are_generated_without_any_answer(tmp_path: Path) -> None:
    written = write_student_notebooks(tmp_path)
    assert [p.name for p in written] == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    solution_cells = 0
    for path in written:
        instructor = read(NOTEBOOKS / path.name)
        student = read(path)
        assert len(student.cells) == len(instructor.cells)
        whole = path.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in whole and "END SOLUTION" not in whole
        for mine, theirs in zip(instructor.cells, student.cells, strict=True):
            if not is_solution(mine):
                assert theirs.source == mine.source
                continue
            solution_cells += 1
            answer = solution_lines(mine)
            assert answer, f"{path.name}: an empty solution cell"
            for line in answer:
                assert line not in theirs.source, f"{path.name}: answer leaked: {line!r}"
            stub = "raise NotImplementedError()" if mine.cell_type == "code" else "YOUR ANSWER"
            assert stub in theirs.source
        for cell in student.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None
    # Notebook 01's three exercises and notebook 04's workload question.
    assert solution_cells >= 4


def test_a_solution_outside_a_solution_cell_is_refused() -> None:
    # A marked answer in a cell nobody tagged must stop the build, not slip through.
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells.append(
        nbformat.v4.new_code_cell(f"x = 1\n{BEGIN}\nanswer = 42\n{END}\n")  # type: ignore[no-untyped-call]
    )
    with pytest.raises(RuntimeError, match="non-solution cell"):
        student_notebook(nb)
