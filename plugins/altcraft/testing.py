"""Pytest plugin (``pytest11`` entry point ``altcraft``): a real Altcraft API emulator for tests.

Fixtures:

* ``altcraft_emulator_server`` (session): an :class:`EmulatorClient` for ``python -m altcraft.emulator``
  started on a free port of 127.0.0.1 and stopped at the end of the session. When ``ALTCRAFT_EMULATOR_URL``
  is set, that running emulator is used instead (token from ``ALTCRAFT_EMULATOR_TOKEN``, default
  ``emulator-token``).
* ``altcraft_emulator`` (function): the same client after :meth:`EmulatorClient.reset`, with
  ``AIRFLOW_CONN_ALTCRAFT_DEFAULT`` set to :meth:`EmulatorClient.connection_json` for the test, its extras
  taken from ``altcraft_connection_extra`` (``{}``; override that fixture in a ``conftest.py``, e.g. to
  back off instantly).
* ``altcraft_module_emulator`` (module): an emulator process of one test module alone, never reset by
  other tests (for a module that runs a whole Airflow against it).

Importing this module stays cheap (no web framework, ``requests`` only when a client is used).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess  # ruff: ignore[suspicious-subprocess-import]
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import pytest

from altcraft.emulator.state import DEFAULT_TOKEN

if TYPE_CHECKING:
    import requests

URL_ENV = "ALTCRAFT_EMULATOR_URL"
TOKEN_ENV = "ALTCRAFT_EMULATOR_TOKEN"  # ruff: ignore[hardcoded-password-string]
CONNECTION_ENV = "AIRFLOW_CONN_ALTCRAFT_DEFAULT"
_NO_TOKEN: Any = object()


class EmulatorClient:
    """Talks to a running emulator: its control API (``/_emulator/``) and, raw, its Altcraft API."""

    def __init__(self, url: str, token: str = DEFAULT_TOKEN, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # ------------------------------------------------------------------------------------ control API

    def reset(self) -> None:
        """Back to the server's initial seed: profiles, journal, tasks, faults and config."""
        self._control("POST", "reset")

    def seed(self, **kw: Any) -> None:
        """Add or replace ``databases``, ``scenarios``, ``triggers``, ``profiles`` and ``tokens`` (lists of
        objects; all or nothing: an invalid seed changes nothing and raises)."""
        self._control("POST", "seed", kw)

    def config(self, **kw: Any) -> dict[str, Any]:
        """Change config keys; returns the whole config. Keys: ``error_http_status``, ``total_key``,
        ``task_success_status``, ``task_result``, ``strict``, ``task_delay_seconds``, ``max_batch_profiles``,
        ``max_body_bytes``, ``latency_ms`` (docs/emulator.md, "Control API")."""
        return self._control("POST", "config", kw)["config"]

    def add_faults(self, *rules: dict[str, Any], random_seed: int | None = None) -> list[dict[str, Any]]:
        """Append fault rules (optionally reseeding their random source); returns every rule's state.
        A bad rule raises (the emulator's 400 names its field) and none of ``rules`` is added."""
        body: dict[str, Any] = {"rules": list(rules)}
        if random_seed is not None:
            body["random_seed"] = random_seed
        return self._control("POST", "faults", body)["faults"]

    def clear_faults(self) -> None:
        self._control("DELETE", "faults")

    def journal(self, scenario_id: int | None = None) -> list[dict[str, Any]]:
        """Launch journal entries, oldest first: one per launch request of one profile."""
        params = {} if scenario_id is None else {"scenario_id": scenario_id}
        return self._control("GET", "journal", params=params)["launches"]

    def profiles(self, db_id: int | None = None) -> list[dict[str, Any]]:
        """Profiles ``{id, db_id, fields, subscriptions}`` of one database (all databases when None)."""
        params = {} if db_id is None else {"db_id": db_id}
        return self._control("GET", "profiles", params=params)["profiles"]

    def state(self) -> dict[str, Any]:
        return self._control("GET", "state")

    def connection_json(self, **extra: Any) -> str:
        """An Airflow connection (``AIRFLOW_CONN_...`` JSON form) for this emulator and its token."""
        return json.dumps({"conn_type": "altcraft", "host": self.url, "password": self.token, "extra": extra})

    # ------------------------------------------------------------------------------------ Altcraft API

    def api_url(self, endpoint: str) -> str:
        return f"{self.url}/api/v1.1/{endpoint}"

    def post(
        self, endpoint: str, body: Any = None, *, token: Any = _NO_TOKEN, **kwargs: Any
    ) -> requests.Response:
        """Raw POST to an API method, with ``Authorization: Bearer`` (``token=None``: no header)."""
        import requests

        token = self.token if token is _NO_TOKEN else token
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
        timeout = kwargs.pop("timeout", self.timeout)
        return requests.post(self.api_url(endpoint), json=body, headers=headers, timeout=timeout, **kwargs)

    def _control(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        import requests

        response = requests.request(
            method, f"{self.url}/_emulator/{path}", json=body, params=params, timeout=self.timeout
        )
        if response.status_code >= 400:
            raise RuntimeError(
                f"emulator control call {method} {path} failed: {response.status_code} {response.text}"
            )
        return response.json()


# ---------------------------------------------------------------------------------------- process


@contextmanager
def emulator_process(
    *args: str, token: str = DEFAULT_TOKEN, startup_timeout: float = 30.0
) -> Generator[EmulatorClient, None, None]:
    """Run ``python -m altcraft.emulator *args`` on a free port of 127.0.0.1 until the block ends."""
    with tempfile.TemporaryFile() as log:
        process, client = _start(list(args), token, startup_timeout, log)
        try:
            yield client
        finally:
            _stop(process)


def _start(
    args: list[str], token: str, timeout: float, log: IO[bytes]
) -> tuple[subprocess.Popen[bytes], EmulatorClient]:
    """Start the server, retrying on another port if the chosen one was taken in between."""
    for _attempt in range(3):
        log.seek(0)
        log.truncate()
        port = _free_port()
        command = [sys.executable, "-m", "altcraft.emulator", "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(  # ruff: ignore[subprocess-without-shell-equals-true]
            [*command, "--token", token, *args], stdout=log, stderr=subprocess.STDOUT
        )
        client = EmulatorClient(f"http://127.0.0.1:{port}", token)
        if _wait_ready(process, client, timeout):
            return process, client
        _stop(process)
        log.seek(0)
        output = log.read().decode(errors="replace")
        if "address already in use" not in output.lower():
            raise RuntimeError(f"the Altcraft emulator did not start within {timeout} s:\n{output[-3000:]}")
    raise RuntimeError("the Altcraft emulator found no free port")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(process: subprocess.Popen[bytes], client: EmulatorClient, timeout: float) -> bool:
    """Whether ``process`` serves on the client's port within ``timeout``: the server answering there must
    say it is ``process`` (another one may have taken the port after `_free_port`; ours then exits)."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            state = requests.get(f"{client.url}/_emulator/state", timeout=1)
            if state.ok and state.json().get("pid") == process.pid:
                return True
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def altcraft_emulator_server() -> Iterator[EmulatorClient]:
    """The session's emulator (started here, or the one at ``ALTCRAFT_EMULATOR_URL``)."""
    url = os.environ.get(URL_ENV)
    if url:
        yield EmulatorClient(url, os.environ.get(TOKEN_ENV, DEFAULT_TOKEN))
        return
    with emulator_process() as client:
        yield client


@pytest.fixture(scope="module")
def altcraft_module_emulator() -> Iterator[EmulatorClient]:
    """An emulator of this test module alone (the session's one is reset by every test)."""
    with emulator_process() as client:
        yield client


@pytest.fixture
def altcraft_connection_extra() -> dict[str, Any]:
    """Connection extras of ``AIRFLOW_CONN_ALTCRAFT_DEFAULT`` in ``altcraft_emulator``: none by default."""
    return {}


@pytest.fixture
def altcraft_emulator(
    altcraft_emulator_server: EmulatorClient,
    altcraft_connection_extra: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> EmulatorClient:
    """The emulator, freshly reset, and ``AIRFLOW_CONN_ALTCRAFT_DEFAULT`` pointing at it."""
    altcraft_emulator_server.reset()
    monkeypatch.setenv(CONNECTION_ENV, altcraft_emulator_server.connection_json(**altcraft_connection_extra))
    return altcraft_emulator_server
