"""Where the package's own data lives, in a checkout and in an installed wheel alike.

In a checkout, ``voice_agent/personas``, ``voice_agent/models`` and ``voice_agent/ui`` are links
to the top-level folders of the same names; a wheel carries their contents in those places.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def personas_dir() -> Path:
    """The built-in persona files."""
    return PACKAGE_DIR / "personas"


def catalog_file() -> Path:
    """models/catalog.yaml: every embedded model, its package, files and checksums."""
    return PACKAGE_DIR / "models" / "catalog.yaml"
