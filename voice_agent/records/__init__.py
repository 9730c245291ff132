"""Session records: per session, a JSON-lines transcript (what was said, generated, heard, and
when) and optionally a stereo recording (the caller left, the assistant right, on one clock).
Off unless `records.enabled`; see docs/records.md.

- `clock`: the session clock everything is placed on;
- `transcript`: the session's events as transcript lines;
- `audio`: the stereo recording, tapped at the transport;
- `store`: the records on disk (list, show, export, retention);
- `recorder`: recording one session, and a server's records.
"""

from voice_agent.records.recorder import Records, SessionRecorder, recorded
from voice_agent.records.store import RecordError, RecordStore, RecordSummary

__all__ = ["RecordError", "RecordStore", "RecordSummary", "Records", "SessionRecorder", "recorded"]
