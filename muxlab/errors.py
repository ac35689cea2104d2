"""The failures a user can cause, each turned into one line and an exit status by the CLI."""

from __future__ import annotations


class MuxlabError(Exception):
    """A failure to report as ``muxlab: error: <message>`` with ``exit_status``."""

    exit_status = 2


class UsageError(MuxlabError):
    """Arguments that parse but cannot work together or on this machine."""


class SetupError(MuxlabError):
    """Something outside muxlab is not as a command needs it (address, limits, tools)."""


class RunError(MuxlabError):
    """A run started but could not produce a valid result."""

    exit_status = 1
