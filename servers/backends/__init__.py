"""The registry of readiness mechanisms, by the name used on the command line."""

from __future__ import annotations

from typing import Literal, get_args

from servers.backends.base import (
    ERROR,
    FD_SETSIZE,
    READ,
    WRITE,
    Backend,
    DescriptorCeilingError,
    Event,
)
from servers.backends.epoll_backend import EdgeTriggeredEpollBackend, EpollBackend
from servers.backends.poll_backend import PollBackend
from servers.backends.select_backend import SelectBackend

BackendName = Literal["select", "poll", "epoll-lt", "epoll-et"]
BACKEND_NAMES: tuple[BackendName, ...] = get_args(BackendName)

BACKENDS: dict[BackendName, type[Backend]] = {
    "select": SelectBackend,
    "poll": PollBackend,
    "epoll-lt": EpollBackend,
    "epoll-et": EdgeTriggeredEpollBackend,
}


class BackendUnavailableError(RuntimeError):
    """The named backend exists but cannot run on this machine."""


def create_backend(name: BackendName) -> Backend:
    cls = BACKENDS[name]
    reason = cls.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available here: {reason}")
    return cls()


__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "ERROR",
    "FD_SETSIZE",
    "READ",
    "WRITE",
    "Backend",
    "BackendName",
    "BackendUnavailableError",
    "DescriptorCeilingError",
    "Event",
    "create_backend",
]
