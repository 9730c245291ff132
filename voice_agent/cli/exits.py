"""The `voice-agent` command's exit statuses."""

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2
"""0 ok, 1 a problem with the input (a broken persona or config, say), 2 a usage error."""
