"""Turn-taking: when the user's turn ends, replying early, and telling a barge-in from a cough.

`TurnStage` sits between the ASR and the LLM. It sees the VAD's decisions (speech onset, start,
pause), the user's audio, the ASR's transcripts, and, coming back up from the output, whether
the assistant is speaking. It decides the end of the user's turn, gives the LLM the turn's text
before that (a preemptive reply), ducks the assistant's voice under speech and tells a
barge-in from a backchannel or a cough; with the realtime API, the client may decide the turns.

The deciding is done by synchronous state machines, like `audio/vad/activity.py`'s `VoiceActivity`:
fed positions on the audio clock (samples heard), the VAD's decisions, transcripts and the turn
model's scores, they return plain decisions (send the turn's text, end the turn, duck,
interrupt, score this pause, events to emit), with no asyncio, no frames and no executor. The
stage adapts them to the pipeline. Where each part lives:

- `lexicon.py`: the words it reads (`words`, `BACKCHANNELS`, `HANGING`, `hangs`, `asks`,
  `takes_the_floor`).
- `policy.py`: `TurnPolicy`, the numbers and switches it decides with.
- `hearing.py`: `Hearing`, the audio clock and who is speaking on it.
- `decisions.py`: what the machines decide (`SendTurn`, `EndTurn`, `Duck`, `Interrupt`, ...).
- `endpointing.py`: `Endpointer`, the end of the user's turn (silence, the turn model's score,
  hanging words, whole questions), preemptive replies, resuming and reopening a turn, and turns
  the client commits or discards.
- `barge_in.py`: `BargeInJudge`, speech over the reply: duck at its onset, confirm it by its
  length or its words, reject it at the pause.
- `taker.py`: `TurnTaker`, the machine the stage feeds: it keeps the `Hearing`, routes each
  input to the two machines above and hands the floor between them.
- `model.py`: `TurnModel` and the audio it scores (`RecentAudio`, the last 8 s).
- `stage.py`: `TurnStage`, the pipeline's adapter: frames in, the turn model in the executor,
  decisions out as frames and events.
"""

from voice_agent.turns.barge_in import BargeInJudge, Verdict
from voice_agent.turns.endpointing import QUESTION_FLOOR, Endpointer
from voice_agent.turns.hearing import Hearing
from voice_agent.turns.lexicon import BACKCHANNELS, HANGING, asks, hangs, takes_the_floor, words
from voice_agent.turns.model import TURN_MODEL_WINDOW_S, RecentAudio, TurnModel
from voice_agent.turns.policy import TurnPolicy, TurnPolicyFrame
from voice_agent.turns.stage import TurnStage
from voice_agent.turns.taker import TurnTaker

__all__ = [
    "BACKCHANNELS",
    "HANGING",
    "QUESTION_FLOOR",
    "TURN_MODEL_WINDOW_S",
    "BargeInJudge",
    "Endpointer",
    "Hearing",
    "RecentAudio",
    "TurnModel",
    "TurnPolicy",
    "TurnPolicyFrame",
    "TurnStage",
    "TurnTaker",
    "Verdict",
    "asks",
    "hangs",
    "takes_the_floor",
    "words",
]
