"""The registry of readiness mechanisms, by the name used on the command line."""

from __future__ import annotations

from typing import Literal, get_args

from servers.backends.base import (
    ERROR,
    FD_SETSIZE,
    READ,
    WRITE,
    Backend,
    CompletionMechanism,
    DescriptorCeilingError,
    Event,
)
from servers.backends.epoll_backend import EdgeTriggeredEpollBackend, EpollBackend
from servers.backends.poll_backend import PollBackend
from servers.backends.select_backend import SelectBackend
from servers.backends.uring_backend import UringCompletion, UringPollBackend

ReadinessBackendName = Literal["select", "poll", "epoll-lt", "epoll-et", "io_uring-poll"]
READINESS_BACKEND_NAMES: tuple[ReadinessBackendName, ...] = get_args(ReadinessBackendName)
# Every implementation `muxlab serve --backend` takes: the readiness backends, which run
# the shared loop (servers/loop.py), and io_uring's completion mode, which brings its own
# (servers/uring_loop.py).
BackendName = Literal[ReadinessBackendName, "io_uring"]
BACKEND_NAMES: tuple[BackendName, ...] = (*READINESS_BACKEND_NAMES, "io_uring")

READINESS_BACKENDS: dict[ReadinessBackendName, type[Backend]] = {
    "select": SelectBackend,
    "poll": PollBackend,
    "epoll-lt": EpollBackend,
    "epoll-et": EdgeTriggeredEpollBackend,
    "io_uring-poll": UringPollBackend,
}
BACKENDS: dict[BackendName, type[Backend] | type[CompletionMechanism]] = {
    **{name: cls for name, cls in READINESS_BACKENDS.items()},
    "io_uring": UringCompletion,
}


class BackendUnavailableError(RuntimeError):
    """The named backend exists but cannot run on this machine."""


def brings_own_loop(name: BackendName) -> bool:
    """True for a completion mechanism: it has no register/wait for the shared loop."""
    return issubclass(BACKENDS[name], CompletionMechanism)


def require_available(name: BackendName) -> None:
    """Raise :class:`BackendUnavailableError`, with the one-line reason, where ``name``
    cannot run."""
    reason = BACKENDS[name].unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available here: {reason}")


def create_backend(name: BackendName) -> Backend:
    cls = BACKENDS[name]
    require_available(name)
    if not issubclass(cls, Backend):
        raise BackendUnavailableError(
            f"backend {name!r} is a completion loop, not a readiness mechanism: it has no "
            "register/wait for the shared loop (muxlab serve runs its own loop)"
        )
    return cls()


__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "ERROR",
    "FD_SETSIZE",
    "READ",
    "READINESS_BACKENDS",
    "READINESS_BACKEND_NAMES",
    "WRITE",
    "Backend",
    "BackendName",
    "BackendUnavailableError",
    "CompletionMechanism",
    "DescriptorCeilingError",
    "Event",
    "ReadinessBackendName",
    "brings_own_loop",
    "create_backend",
    "require_available",
]
