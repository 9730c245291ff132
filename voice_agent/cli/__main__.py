"""`python -m voice_agent.cli`: the same as `voice-agent`."""

import sys

from voice_agent.cli import main

sys.exit(main())
