"""The voice-agent server: `Server` (app.py) and `run_server`, what `voice-agent serve` runs.

- app.py: the server and each session's life;
- access.py: who may connect;
- handshakes.py: how each kind of session (`/ws`, `/pcm`, `/v1/realtime`) begins;
- responses.py: the plain HTTP answers (the page's files, JSON, text).
"""

from voice_agent.server.access import ServerError, check_binding
from voice_agent.server.app import Server, run_server
from voice_agent.server.responses import WEB_DIR

__all__ = ["WEB_DIR", "Server", "ServerError", "check_binding", "run_server"]
