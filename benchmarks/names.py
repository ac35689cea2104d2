"""Names that become paths: a run id, an experiment name (issue 9).

A run id names the run directory under ``--out-dir`` and an experiment name names its
chart files, so each must be one path component that stays where it is put: only
``[A-Za-z0-9._-]``, not starting with ``.`` (no ``..``, no hidden file), no ``/``.
"""

from __future__ import annotations

import re

from muxlab.errors import UsageError

SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
MAX_NAME_CHARS = 100  # well under NAME_MAX (255 bytes) with a suffix added


def check_safe_name(what: str, name: str) -> str:
    """``name`` itself, or :class:`UsageError` saying which characters are allowed."""
    if not SAFE_NAME.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise UsageError(
            f"{what} {name!r} must be one path component of A-Z a-z 0-9 . _ - "
            f"(not starting with '.', at most {MAX_NAME_CHARS} characters)"
        )
    return name
