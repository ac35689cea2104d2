"""The student starter is generated from the instructor's annotated copy, never edited by hand.

``docs/instructor/assignment/seed_server_annotated.py`` marks each bug with ``# BUG``
comment lines; the handout is that file without them, so the two cannot drift and the
handout carries no hint. Run ``python -m lab.assignment.handout`` after editing the
annotated copy (tests/test_grade.py fails until you do).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
ANNOTATED = ROOT / "docs" / "instructor" / "assignment" / "seed_server_annotated.py"
SOLUTION = ROOT / "docs" / "instructor" / "assignment" / "solution.py"
STARTER = Path(__file__).resolve().parent / "echo_server.py"
MARK = "# BUG"


def student_copy(annotated: str) -> str:
    """``annotated`` without its bug-marking comment lines."""
    kept = [
        line for line in annotated.splitlines(keepends=True) if not line.lstrip().startswith(MARK)
    ]
    return "".join(kept)


def main() -> None:
    STARTER.write_text(student_copy(ANNOTATED.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {STARTER.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
