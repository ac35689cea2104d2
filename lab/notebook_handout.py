"""Student notebooks, generated from the instructor notebooks in ``notebooks/``.

The notebooks in ``notebooks/`` are the instructor copies: each exercise cell is an
nbgrader solution cell (``metadata.nbgrader.solution``) with its answer between
``### BEGIN SOLUTION`` and ``### END SOLUTION``. nbgrader's ``ClearSolutions``
preprocessor, run through nbconvert, replaces each answer with ``raise
NotImplementedError()`` (code) or "YOUR ANSWER HERE" (text), and refuses a marked region
outside a solution cell, so no answer can leak by a missing tag. Outputs are cleared.

Usage: ``python -m lab.notebook_handout OUT_DIR`` writes one student notebook per
instructor notebook into OUT_DIR (created if missing).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat
from nbconvert.preprocessors import ClearOutputPreprocessor
from nbgrader.preprocessors import ClearSolutions

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"


def student_notebook(instructor: Any) -> Any:
    """The student version of an instructor notebook (an ``nbformat`` node, not modified)."""
    nb = nbformat.from_dict(instructor)  # type: ignore[no-untyped-call]  # a deep copy
    resources: dict[str, Any] = {}
    clear = ClearSolutions(begin_solution_delimeter=BEGIN, end_solution_delimeter=END,
                           enforce_metadata=True)  # fmt: skip
    nb, resources = clear.preprocess(nb, resources)
    clear_outputs = ClearOutputPreprocessor()  # type: ignore[no-untyped-call]
    nb, resources = clear_outputs.preprocess(nb, resources)  # type: ignore[no-untyped-call]
    return nb


def write_student_notebooks(out_dir: Path, source_dir: Path = NOTEBOOKS) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source_dir.glob("*.ipynb")):
        instructor = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        target = out_dir / path.name
        nbformat.write(student_notebook(instructor), target)  # type: ignore[no-untyped-call]
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lab.notebook_handout OUT_DIR", file=sys.stderr)
        return 2
    for path in write_student_notebooks(Path(argv[0])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
