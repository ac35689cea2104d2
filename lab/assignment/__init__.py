"""The graded coding task: the student handout (``echo_server.py``, README.md)."""
