"""The lab guides: predict before run, the same glossary, Chinese typography.

The section, command and question parity of the two guides is checked in
tests/test_demos.py (test_lab_guides_cover_every_demo_and_stay_in_step); these add the
parts of issue 13: every expected result folded behind a prediction, a glossary with the
same terms in both languages, and full-width quotes in the Chinese prose.
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
ENGLISH = (DOCS / "lab-guide.md").read_text(encoding="utf-8")
CHINESE = (DOCS / "lab-guide.zh-CN.md").read_text(encoding="utf-8")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def predictions(text: str, label: str, summary: str) -> list[str]:
    """For each prediction prompt: the block that follows it, which must be the answer."""
    pattern = rf"\*\*{re.escape(label)}\*\* .*?\n\n(<details>\n<summary>{summary}</summary>)"
    return re.findall(pattern, text, re.S)


def glossary(text: str, title: str) -> str:
    """The glossary chapter, found by its title whatever its number (chapters get added)."""
    return re.split(rf"^## \d+\. {title}\n", text, maxsplit=1, flags=re.M)[1]


def glossary_terms(text: str, title: str, column: int) -> list[str]:
    section = glossary(text, title).split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [row.split(" | ")[column].strip("| ") for row in rows]


def test_no_result_is_given_before_the_student_predicts() -> None:
    assert "**Expect.**" not in ENGLISH and "**预期。**" not in CHINESE
    english = predictions(ENGLISH, "Predict.", "What you should see")
    chinese = predictions(CHINESE, "预测。", "应当看到的结果")
    assert len(english) == ENGLISH.count("**Predict.**") == ENGLISH.count("<details>") >= 15
    assert len(chinese) == CHINESE.count("**预测。**") == len(english)
    assert ENGLISH.count("</details>") == CHINESE.count("</details>") == len(english)


def test_glossaries_have_the_same_terms() -> None:
    english_terms = glossary_terms(ENGLISH, "Glossary", 0)
    chinese_side = glossary_terms(CHINESE, "术语表", 2)
    assert len(english_terms) >= 15
    assert english_terms == chinese_side
    for required in ("file descriptor", "ready list", "interest list", "thundering herd"):
        assert required in english_terms
    for required in ("文件描述符", "水平触发", "边沿触发", "就绪链表", "兴趣列表", "惊群"):
        assert required in glossary(CHINESE, "术语表")


def test_chinese_prose_uses_full_width_quotes() -> None:
    prose = CODE.sub("", CHINESE)
    assert '"' not in prose
    assert prose.count("“") == prose.count("”") > 10


def test_answer_key_answers_every_guide_question() -> None:
    key = (DOCS / "instructor" / "answer-key.md").read_text(encoding="utf-8")
    questions = [int(n) for n in re.findall(r"^ ?(\d+)\. ", ENGLISH, re.M)]
    answered = [int(n) for n in re.findall(r"^\*\*(\d+)\. ", key, re.M)]
    assert questions == list(range(1, len(questions) + 1))
    assert answered == questions
