"""Benchmarks that print figures: `voice-agent bench [models | conversation]`."""

from collections.abc import Callable

Progress = Callable[[str], None]
"""How a bench tells what it is doing: one line for people (stderr)."""
