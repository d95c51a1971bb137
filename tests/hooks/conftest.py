from __future__ import annotations

import pytest

from altcraft.hooks.altcraft import AltcraftHook

FAST_RETRIES = {"backoff_initial": 0, "backoff_max": 0.01, "max_retries": 3, "timeout": 5}


@pytest.fixture
def emulator(altcraft_emulator, monkeypatch):
    """The emulator, with the default connection set to back off instantly."""
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", altcraft_emulator.connection_json(**FAST_RETRIES))
    return altcraft_emulator


@pytest.fixture
def hook(emulator) -> AltcraftHook:
    hook = AltcraftHook()
    yield hook
    hook.close()
