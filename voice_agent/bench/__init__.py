"""Benchmarks that print figures: `voice-agent bench [models | turns | conversation | capacity |
soak]` (the command itself: `voice_agent.cli.bench`).

One module per suite (`models`, `turntaking`, `conversation`, `capacity`, `soak/`); what they
share: `figures` (a figure, the table), `script` (what the simulated people say), `caller` and
`mic` (simulated callers over a real transport), `simulated_user`, `server` (the server under
test), `room` (a simulated room, in process).
"""

from collections.abc import Callable

Progress = Callable[[str], None]
"""How a bench tells what it is doing: one line for people (stderr)."""
