"""Where a sweep ran: ``results.json``'s ``topology``, written and read here only.

A local sweep (server and load generator on this machine) is ``{"mode": "local"}``. A
``--cluster`` sweep records how its Dask cluster was reached (``cluster`` as given,
``scheduler`` as connected), the server's host (its Dask worker's name and address, or
``local``), every client host (name, Dask worker address, load generator processes) and
the clock skew between the client hosts measured when the sweep started (each run's own
measurement is in its ``loadgen/*.json``, key ``cluster``). A file written before the
field existed has no ``topology``: it was a local sweep, and reads as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TopologyMode = Literal["local", "cluster"]
# The server host's name when the server runs on the machine that runs the sweep.
LOCAL_HOST = "local"


@dataclass(frozen=True)
class ClientHost:
    name: str
    address: str  # its Dask worker's address
    processes: int  # load generator processes on it


@dataclass(frozen=True)
class SweepTopology:
    mode: TopologyMode = "local"
    cluster: str | None = None  # --cluster as given: tcp://HOST:PORT or ssh:H1,H2,...
    scheduler: str | None = None  # the scheduler's address as connected
    server_host: str = LOCAL_HOST
    server_address: str | None = None  # the server host's Dask worker; None when local
    clients: tuple[ClientHost, ...] = ()
    skew_ms: float | None = None  # latest minus earliest client clock offset
    skew_uncertainty_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        if self.mode == "local":
            return {"mode": "local"}
        return {
            "mode": "cluster",
            "cluster": self.cluster,
            "scheduler": self.scheduler,
            "server_host": {"name": self.server_host, "address": self.server_address},
            "clients": [
                {"name": c.name, "address": c.address, "processes": c.processes}
                for c in self.clients
            ],
            "skew_ms": self.skew_ms,
            "skew_uncertainty_ms": self.skew_uncertainty_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> SweepTopology:
        """Read back :meth:`to_json`; ``None`` (no field: an older file) is local;
        :class:`ValueError` for anything else that is not a topology."""
        if data is None:
            return LOCAL
        if not isinstance(data, dict) or data.get("mode") not in ("local", "cluster"):
            raise ValueError(f"not a sweep topology: {data!r}")
        if data["mode"] == "local":
            return LOCAL
        try:
            server = data["server_host"]
            return cls(
                mode="cluster",
                cluster=str(data["cluster"]),
                scheduler=str(data["scheduler"]),
                server_host=str(server["name"]),
                server_address=None if server["address"] is None else str(server["address"]),
                clients=tuple(
                    ClientHost(str(c["name"]), str(c["address"]), int(c["processes"]))
                    for c in data["clients"]
                ),
                skew_ms=_float_or_none(data["skew_ms"]),
                skew_uncertainty_ms=_float_or_none(data["skew_uncertainty_ms"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed sweep topology: {type(exc).__name__} {exc}") from None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


LOCAL = SweepTopology()
