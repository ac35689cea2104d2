"""The load generator: multiprocess, closed- and open-loop, verified replies, exact latency.

``run_load(LoadConfig(port=...))`` runs in-process (notebooks); ``muxlab load`` is the CLI.
"""

from loadgen.config import LoadConfig
from loadgen.result import LoadResult
from loadgen.runner import run_load

__all__ = ["LoadConfig", "LoadResult", "run_load"]
