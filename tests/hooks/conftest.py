from __future__ import annotations

import pytest

from altcraft.hooks.altcraft import AltcraftHook
from tests.conftest import FAST

FAST_RETRIES = {**FAST, "max_retries": 3}


@pytest.fixture
def altcraft_connection_extra() -> dict:
    """The emulator's default connection backs off instantly."""
    return FAST_RETRIES


@pytest.fixture
def hook(emulator) -> AltcraftHook:
    hook = AltcraftHook()
    yield hook
    hook.close()
