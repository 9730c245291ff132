"""The child process of the engine checks: ``python -m voice_agent.enginecheck NAME...``, the
settings as JSON on stdin; each check reported as a JSON line on stdout (see `runner`)."""

import sys

from voice_agent.enginecheck.checks import CHECKS
from voice_agent.enginecheck.runner import child_main

sys.exit(child_main(CHECKS, sys.argv[1:], sys.stdin))
