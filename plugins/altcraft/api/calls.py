"""Every Altcraft API call the provider makes, described once: endpoint, body, whether it launches, and
how its answer parses. Transport-free: a class supplies :meth:`AltcraftCalls.call` (POST one method,
return the decoded answer) and inherits the rest — :class:`~altcraft.hooks.altcraft.AltcraftHook` over
HTTP, :class:`~altcraft.emulator.in_process.InProcessAltcraft` on the emulator's state in-process.

A new endpoint goes here (its path, its request layout and its answer parsing, with the models in
:mod:`altcraft.api.models` and :mod:`altcraft.api.protocol`), and every client has it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from altcraft.api.errors import AltcraftApiError, AltcraftUnexpectedAnswer
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
    ResultRead,
    Scenario,
    StartRequest,
    TaskStatus,
    batch_results,
)
from altcraft.api.protocol import parse_answer, scenario_of, task_id_of, task_status_of
from altcraft.api.result_identity import items_misattributed, keys_misattributed
from altcraft.api.retry import as_uncertain

PAGE_SIZE = 1000
T = TypeVar("T")


def task_status_call(task_id: str) -> tuple[str, dict[str, Any], Callable[[dict[str, Any]], TaskStatus]]:
    """``tasks/status`` of one task: endpoint, body and answer parsing (also made by the async hook)."""
    return "tasks/status", {"task_id": task_id}, partial(task_status_of, task_id=task_id)


def _in_order(
    endpoint: str,
    request: BatchLaunchRequest | ImportBatchRequest,
    keys: Sequence[str],
    parse: Callable[[dict[str, Any]], T],
) -> Callable[[dict[str, Any]], T]:
    """``parse``, refusing an answer whose per-contact results name other contacts than those sent at their
    positions (`altcraft.api.result_identity`): ``keys`` (ledger keys, in request order) or, without them,
    the request's items."""

    def checked(answer: dict[str, Any]) -> T:
        parsed = parse(answer)
        results = answer.get("result")
        if keys:
            why = keys_misattributed(keys, results)
        else:
            why = items_misattributed(request.data, request.matching, results)
        if why is not None:
            raise AltcraftUnexpectedAnswer(why, endpoint=endpoint)
        return parsed

    return checked


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
        :param keys: the profiles in the request, carried by ``AltcraftDeliveryUncertain``; the values of a
            lone one are masked in the answer's texts (`contact_values`).
        """
        raise NotImplementedError

    def _typed(
        self,
        endpoint: str,
        body: dict[str, Any],
        parse: Callable[[dict[str, Any]], T],
        *,
        raw_data: bytes | None = None,
        launching: bool = False,
        keys: Sequence[str] = (),
    ) -> T:
        """:meth:`call`, then ``parse`` its answer: an answer that does not parse is
        :class:`AltcraftUnexpectedAnswer` -- for a launching call, delivery-uncertain for ``keys``
        (Altcraft answered 2xx, so it may well have processed the request)."""
        answer = self.call(endpoint, body, raw_data=raw_data, launching=launching, keys=keys)
        try:
            return parse_answer(endpoint, parse, answer)
        except AltcraftUnexpectedAnswer as exc:
            if launching and (uncertain := as_uncertain(exc, endpoint, keys)) is not exc:
                raise uncertain from exc
            raise  # unchanged (not its own cause)

    # ---------------------------------------------------------------------------------------- launches

    def start(self, request: StartRequest, *, keys: Sequence[str] = ()) -> ProfileResult:
        """Put an existing profile into a scenario (``workflows/start``)."""
        parse = ProfileResult.model_validate
        return self._typed("workflows/start", request.to_body(), parse, launching=True, keys=keys)

    def import_and_start(self, request: ImportAndStartRequest, *, keys: Sequence[str] = ()) -> ProfileResult:
        """Import one profile and launch it into a scenario (``workflows/import_and_start``)."""
        parse = ProfileResult.model_validate
        return self._typed("workflows/import_and_start", request.to_body(), parse, launching=True, keys=keys)

    def import_and_start_batch(
        self, request: BatchLaunchRequest, *, raw_data: bytes | None = None, keys: Sequence[str] = ()
    ) -> BatchResult:
        """Import many profiles and launch each (``workflows/import_and_start_batch``).

        :param raw_data: the ``data`` array already encoded (then ``request.data`` is not sent).
        """
        endpoint = "workflows/import_and_start_batch"
        return self._batch(
            endpoint, request, raw_data, keys, _in_order(endpoint, request, keys, BatchResult.model_validate)
        )

    def import_and_start_batch_results(
        self, request: BatchLaunchRequest, *, raw_data: bytes | None = None, keys: Sequence[str] = ()
    ) -> list[ResultRead]:
        """:meth:`import_and_start_batch`, answering only each result's `ProfileResult.read` (the delivery's
        call: the usual answer is read without a model per result, see `batch_results`)."""
        endpoint = "workflows/import_and_start_batch"
        return self._batch(
            endpoint, request, raw_data, keys, _in_order(endpoint, request, keys, batch_results)
        )

    def submit_import_and_start_batch_task(
        self, request: BatchLaunchRequest, *, raw_data: bytes | None = None, keys: Sequence[str] = ()
    ) -> str:
        """Submit ``workflows/import_and_start_batch_task``; returns the Altcraft task id."""
        return self._batch("workflows/import_and_start_batch_task", request, raw_data, keys, task_id_of)

    def _batch(
        self,
        endpoint: str,
        request: BatchLaunchRequest,
        raw_data: bytes | None,
        keys: Sequence[str],
        parse: Callable[[dict[str, Any]], T],
    ) -> T:
        body = request.to_body(without_data=raw_data is not None)
        return self._typed(endpoint, body, parse, raw_data=raw_data, launching=True, keys=keys)

    def get_task_status(self, task_id: str, *, keys: Sequence[str] = ()) -> TaskStatus:
        """Read an asynchronous task's state (``tasks/status``); ``keys``: the contacts the task was sent,
        whose values are masked in an error's text (`call`)."""
        endpoint, body, parse = task_status_call(task_id)
        return self._typed(endpoint, body, parse, keys=keys)

    def wait_for_task(
        self,
        task_id: str,
        timeout: float,
        poll_interval: float,
        stop: threading.Event | None = None,
        *,
        keys: Sequence[str] = (),
    ) -> TaskStatus:
        """Poll ``tasks/status`` until the task is over, ``timeout`` seconds passed or ``stop`` is set; its
        last status (``keys``: see `get_task_status`).

        The caller decides what a still running task means (see ``TaskStatus.state.is_terminal``).
        """
        deadline = time.monotonic() + timeout
        pause = (stop or threading.Event()).wait
        status = self.get_task_status(task_id, keys=keys)
        while not status.state.is_terminal and time.monotonic() < deadline:
            if pause(poll_interval):
                break
            status = self.get_task_status(task_id, keys=keys)
        return status

    # ----------------------------------------------------------------------------------------- imports

    def import_profile(self, request: ImportProfileRequest) -> ProfileResult:
        """Add or update one profile (``profiles/import``).

        Imports may fire the database's import triggers, so unless ``skip_triggers`` is set they are
        retried only as cautiously as launches.
        """
        launching = not request.skip_triggers
        parse = ProfileResult.model_validate
        return self._typed("profiles/import", request.to_body(), parse, launching=launching)

    def import_profiles(self, request: ImportBatchRequest) -> BatchResult:
        """Add or update many profiles (``profiles/import_batch``): one result per item, in its order.

        A result that names another item than the one at its position (`altcraft.api.result_identity`)
        makes the answer unexpected: it cannot be read by position.
        """
        endpoint = "profiles/import_batch"
        parse = _in_order(endpoint, request, (), BatchResult.model_validate)
        return self._typed(endpoint, request.to_body(), parse, launching=not request.skip_triggers)

    # ------------------------------------------------------------------------------------------- reads

    def iter_pages(
        self, endpoint: str, body: dict[str, Any] | None = None, *, item: Callable[[Any], T] = dict
    ) -> Iterator[list[T]]:
        """The items of every page of a keyset-paginated list method (``from_id`` / ``next_from_id``).

        A page that repeats the one before (its cursor moved on, its items did not) is
        :class:`AltcraftUnexpectedAnswer`: paging on would ask the same page again and again.
        """
        request = {"limit": PAGE_SIZE, **(body or {})}
        seen: list[Any] | None = None
        while True:
            page = self._typed(endpoint, request, Page.model_validate)
            if page.data and page.data == seen:
                raise AltcraftUnexpectedAnswer("a page repeats the one before", endpoint=endpoint)
            yield parse_answer(endpoint, lambda data: [item(one) for one in data], page.data)
            previous = request.get("from_id") or 0
            if not page.data or page.next_from_id is None or previous >= page.next_from_id:
                return  # keyset pages only move forward; anything else would loop
            request["from_id"], seen = page.next_from_id, page.data

    def list_scenarios(self, **filters: Any) -> list[Scenario]:
        """All scenarios visible to the token (``workflows/list``, every page)."""
        pages = self.iter_pages("workflows/list", filters, item=Scenario.model_validate)
        return [scenario for page in pages for scenario in page]

    def get_scenario(self, scenario_id: int) -> Scenario | None:
        """One scenario by id, or None when the token cannot see it."""
        body = {"from_id": scenario_id, "limit": 1}
        return self._typed("workflows/list", body, lambda answer: scenario_of(answer, scenario_id))

    def list_databases(self, **filters: Any) -> list[Database]:
        """All databases visible to the token (``databases/list``, every page)."""
        pages = self.iter_pages("databases/list", filters, item=Database.model_validate)
        return [database for page in pages for database in page]

    def get_profile(
        self, db_id: int, match: dict[str, Any], *, keys: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """One profile's fields (``profiles/get``), or None when Altcraft has no such profile.

        ``match`` holds ``matching`` and its key fields (``email``, ``phone``, ``field_name`` +
        ``field_value``, …); ``keys``: the contact's ledger key, whose values are masked in the answer's
        texts (`call`). Developer guide, Profiles → "Get profile data": ``db_id`` is required, the
        answer's ``data`` holds the fields with ``_createtime`` and ``id``. The not-found answer is not
        documented, and "no profile" sends the contact again, so only an answer that says so is read as
        that: a ``data`` of null, ``{}`` or ``[]``, or an error 404 of Altcraft's own (its ``error`` code, not
        only an HTTP 404 of a proxy's or router's page, which says the path was not found) while
        ``databases/get`` finds the database (Altcraft answers 404 for a database not found too). Anything
        else raises: an answer without ``data``, or with one that is not a profile, is
        :class:`AltcraftUnexpectedAnswer`, as is a list of several profiles (no verdict can pick one).
        """
        try:
            answer = self.call("profiles/get", {"db_id": db_id, **match}, keys=keys)
        except AltcraftApiError as exc:
            if exc.code == 404 and exc.coded and exc.refused and self._database_found(db_id):
                return None
            raise
        if "data" not in answer:
            raise AltcraftUnexpectedAnswer("no `data`", endpoint="profiles/get")
        data = answer["data"]
        if isinstance(data, list):  # profiles, not one profile
            if len(data) > 1:
                raise AltcraftUnexpectedAnswer(f"{len(data)} profiles match", endpoint="profiles/get")
            data = data[0] if data else None
        if data is None or data == {}:
            return None
        if not isinstance(data, dict):
            raise AltcraftUnexpectedAnswer("`data` is not a profile", endpoint="profiles/get")
        return data

    def _database_found(self, db_id: int) -> bool:
        """Whether ``databases/get`` finds database ``db_id`` (developer guide, Databases → "Get database
        information": ``id`` → ``data: {id, name, …}``); a 404 is "no", any other failure raises. A database
        found is asked once per client, not once per absent profile."""
        found: set[int] = self.__dict__.setdefault("_databases_found", set())
        if db_id in found:
            return True
        try:
            answer = self.call("databases/get", {"id": db_id})
        except AltcraftApiError as exc:
            if exc.code == 404:
                return False
            raise
        data = answer.get("data")
        if isinstance(data, dict) and str(data.get("id")) == str(db_id):
            found.add(db_id)
            return True
        return False

    def get_database_fields(self, db_id: int) -> list[DatabaseField]:
        """The fields of a database (``databases/fields_get``)."""
        return self._typed(
            "databases/fields_get",
            {"db_id": db_id},
            lambda answer: [DatabaseField.model_validate(item) for item in answer.get("data") or []],
        )
