"""A claim a headline ratio must satisfy, ``ratio <comparison> bound``.

Plain data with no muxlab import, so the implementation registry (which declares the
goals of ratios (a), (b) and (c)) and the statistics (which judge them:
:func:`benchmarks.stats.verdict`) share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Comparison = Literal[">=", "<=", "<", ">"]


@dataclass(frozen=True)
class Goal:
    comparison: Comparison
    bound: float

    def text(self) -> str:
        """``>= 0.9``; Markdown callers swap in ``&ge;``/``&le;`` themselves."""
        return f"{self.comparison} {self.bound:g}"
