"""muxlab: measure how select, poll and epoll (level- and edge-triggered) behave on Linux."""

__version__ = "0.1.0"
