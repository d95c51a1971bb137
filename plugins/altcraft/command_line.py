"""What the provider's command-line tools (``python -m altcraft``, ``altcraft.pipelines``, ``.emulator``)
share in reading their arguments; a leaf."""

from __future__ import annotations

import argparse
from pathlib import Path


def path_argument(value: str) -> Path:
    """A path given on the command line. An empty one is refused: it is a shell variable that is not set or
    a ``$(command)`` that failed, and would otherwise mean the current folder or no path at all."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "empty: a shell variable that is not set, or a $(command) that failed?"
        )
    return Path(value)
