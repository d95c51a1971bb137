"""Every Altcraft API call the provider makes, described once: endpoint, body, whether it launches, and
how its answer parses. Transport-free: a class supplies :meth:`AltcraftCalls.call` (POST one method,
return the decoded answer) and inherits the rest — :class:`~altcraft.hooks.altcraft.AltcraftHook` over
HTTP, :class:`~altcraft.emulator.in_process.InProcessAltcraft` on the emulator's state in-process.

A new endpoint goes here (its path, its request layout and its answer parsing, with the models in
:mod:`altcraft.api.models` and :mod:`altcraft.api.protocol`), and every client has it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from altcraft.api.models import (
    BatchLaunchRequest,
    BatchResult,
    Database,
    DatabaseField,
    ImportAndStartRequest,
    ImportBatchRequest,
    ImportProfileRequest,
    Page,
    ProfileResult,
    Scenario,
    StartRequest,
    TaskStatus,
)
from altcraft.api.protocol import scenario_of, task_id_of, task_status_of

PAGE_SIZE = 1000


class AltcraftCalls:
    """The API calls, on top of one abstract :meth:`call`."""

    def call(
        self,
        endpoint: str,
        body: dict[str, Any],
        *,
        raw_data: bytes | None = None,
        launching: bool = False,
        keys: Sequence[str] = (),
    ) -> dict[str, Any]:
        """POST one API method and return its decoded answer (or raise a typed error).

        :param raw_data: the ``data`` array already encoded, spliced into the body.
        :param launching: the call puts profiles into a scenario; see :mod:`altcraft.api.retry`.
        :param keys: the profiles in the request, carried by ``AltcraftDeliveryUncertain``.
        """
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- launches

    def start(self, request: StartRequest, *, keys: Sequence[str] = ()) -> ProfileResult:
        """Put an existing profile into a scenario (``workflows/start``)."""
        answer = self.call("workflows/start", request.to_body(), launching=True, keys=keys)
        return ProfileResult.model_validate(answer)

    def import_and_start(self, request: ImportAndStartRequest, *, keys: Sequence[str] = ()) -> ProfileResult:
        """Import one profile and launch it into a scenario (``workflows/import_and_start``)."""
        answer = self.call("workflows/import_and_start", request.to_body(), launching=True, keys=keys)
        return ProfileResult.model_validate(answer)

    def import_and_start_batch(
        self, request: BatchLaunchRequest, *, raw_data: bytes | None = None, keys: Sequence[str] = ()
    ) -> BatchResult:
        """Import many profiles and launch each (``workflows/import_and_start_batch``).

        :param raw_data: the ``data`` array already encoded (then ``request.data`` is not sent).
        """
        answer = self._batch("workflows/import_and_start_batch", request, raw_data, keys)
        return BatchResult.model_validate(answer)

    def submit_import_and_start_batch_task(
        self, request: BatchLaunchRequest, *, raw_data: bytes | None = None, keys: Sequence[str] = ()
    ) -> str:
        """Submit ``workflows/import_and_start_batch_task``; returns the Altcraft task id."""
        return task_id_of(self._batch("workflows/import_and_start_batch_task", request, raw_data, keys))

    def _batch(
        self, endpoint: str, request: BatchLaunchRequest, raw_data: bytes | None, keys: Sequence[str]
    ) -> dict[str, Any]:
        body = request.to_body(without_data=raw_data is not None)
        return self.call(endpoint, body, raw_data=raw_data, launching=True, keys=keys)

    def get_task_status(self, task_id: str) -> TaskStatus:
        """Read an asynchronous task's state (``tasks/status``)."""
        return task_status_of(self.call("tasks/status", {"task_id": task_id}), task_id)

    def wait_for_task(self, task_id: str, timeout: float, poll_interval: float) -> TaskStatus:
        """Poll ``tasks/status`` until the task is over or ``timeout`` seconds passed; its last status.

        The caller decides what a still running task means (see ``TaskStatus.state.is_terminal``).
        """
        deadline = time.monotonic() + timeout
        status = self.get_task_status(task_id)
        while not status.state.is_terminal and time.monotonic() < deadline:
            time.sleep(poll_interval)
            status = self.get_task_status(task_id)
        return status

    # ----------------------------------------------------------------------------------------- imports

    def import_profile(self, request: ImportProfileRequest) -> ProfileResult:
        """Add or update one profile (``profiles/import``).

        Imports may fire the database's import triggers, so unless ``skip_triggers`` is set they are
        retried only as cautiously as launches.
        """
        answer = self.call("profiles/import", request.to_body(), launching=not request.skip_triggers)
        return ProfileResult.model_validate(answer)

    def import_profiles(self, request: ImportBatchRequest) -> BatchResult:
        """Add or update many profiles (``profiles/import_batch``)."""
        answer = self.call("profiles/import_batch", request.to_body(), launching=not request.skip_triggers)
        return BatchResult.model_validate(answer)

    # ------------------------------------------------------------------------------------------- reads

    def iter_pages(self, endpoint: str, body: dict[str, Any] | None = None) -> Iterator[Page]:
        """Every page of a keyset-paginated list method (``from_id`` / ``next_from_id``)."""
        request = {"limit": PAGE_SIZE, **(body or {})}
        while True:
            page = Page.model_validate(self.call(endpoint, request))
            yield page
            if not page.data or page.next_from_id is None or page.next_from_id == request.get("from_id"):
                return
            request["from_id"] = page.next_from_id

    def list_scenarios(self, **filters: Any) -> list[Scenario]:
        """All scenarios visible to the token (``workflows/list``, every page)."""
        return [
            Scenario.model_validate(item)
            for page in self.iter_pages("workflows/list", filters)
            for item in page.data
        ]

    def get_scenario(self, scenario_id: int) -> Scenario | None:
        """One scenario by id, or None when the token cannot see it."""
        return scenario_of(self.call("workflows/list", {"from_id": scenario_id, "limit": 1}), scenario_id)

    def list_databases(self, **filters: Any) -> list[Database]:
        """All databases visible to the token (``databases/list``, every page)."""
        return [
            Database.model_validate(item)
            for page in self.iter_pages("databases/list", filters)
            for item in page.data
        ]

    def get_database_fields(self, db_id: int) -> list[DatabaseField]:
        """The fields of a database (``databases/fields_get``)."""
        answer = self.call("databases/fields_get", {"db_id": db_id})
        return [DatabaseField.model_validate(item) for item in answer.get("data") or []]
