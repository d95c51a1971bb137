"""Altcraft API emulator: a real HTTP server (FastAPI + uvicorn) for tests and demos.

Run it with ``python -m altcraft.emulator --port 8765``; drive it from tests with the pytest plugin
:mod:`altcraft.testing`. Modules: :mod:`~altcraft.emulator.state` (all semantics, no web framework),
:mod:`~altcraft.emulator.faults` (fault rules), :mod:`~altcraft.emulator.app` (HTTP + ASGI fault layer).

It follows the public developer guide where it speaks; docs/emulator.md lists, behaviour by behaviour, the
quote it follows or marks it invented. ``Config.strict`` (``--strict``) keeps checks stricter than the docs.
Readings chosen where the documentation is silent:

* Errors: body ``{"error": code, "error_text": text}``; the HTTP status mirrors the code unless config
  ``error_http_status="always_200"``. Codes: 400 bad request, 401 no token, 403 invalid token or
  "No access to database N / workflow N", 404 unknown method/workflow/database/profile/task, 405 not
  POST, 409 "more than one profile matches", 413 body too large.
* Tokens are read from ``Authorization: Bearer`` first, then from the body ``token``, then from the URL
  query string (documented, discouraged; refused when strict). Unknown body keys are ignored; unknown
  profile fields are not (400, or a per-item error naming the field), nor a documented parameter of another
  type than its page gives (400: ``state.PARAMETER_TYPES``, e.g. ``"workflow_id": "12"``).
* Trailing slashes do not matter. ``matching`` defaults to ``email`` on every method, and every method
  accepts all 11 modes (strict: only those its page documents). ``workflows/start`` never creates a
  profile (404).
* Matching (the developer guide's *Matching* page): ``email``/``phone`` look at the profile field
  (case-insensitive email; phones without spaces, dashes, parentheses) or at email/SMS subscriptions;
  ``resource_id`` narrows subscription lookups to that resource. ``custom`` works on any database field
  (tags: ``"a, b"`` = has all tags). ``custom_sub`` matches a subscription whose ``cc_data`` or
  ``custom_fields`` has ``field_name`` equal to ``field_value``. ``email_phone*`` accept either key or both;
  hits for both are pooled (two → 409).
* A profile created by an import takes its matching key as fields (``email``, ``phones`` or the custom
  field) so the same key finds it again; ``*_sub`` modes create it with the subscriptions from ``data``.
  Subscriptions merge by channel + resource + address (email / phone / provider + subscription_id).
* Re-entry: scenario modes ``skip`` and ``skip_in_any_case`` journal a repeated launch with
  ``entered: false``; every other mode (``restart``, ...) always enters. ``workflows/activate`` with
  ``skip_profiles`` forgets who entered.
* Batches (the guide's ``automation-scenarios/33063492``, docs/api-conformance.md): top-level
  ``workflow_id``/``db_id``/``trigger_id``, ``matching``, ``field_name``, ``resource_id`` and options;
  ``data`` items in any documented layout — flat, key + nested ``data``, or ``data`` only; a key missing on
  the item is read from the fields (strict: the key must be on the item). ``result`` has exactly one entry
  per item, in order; a failed item is neither imported nor launched. ``db_id`` of a launch must equal the
  scenario's ``list_id`` when given.
* Tasks: ``data.task_id`` = ``task_<uuid>``; ``tasks/status`` gives ``data: {task_id, status, progress,
  result}``; status ``queued`` (for ``task_delay_seconds``, and while config ``tasks_held``) → ``running``
  (ten steps) → ``completed`` (or ``success``, or ``completed_with_errors``: a status the client does not
  recognise), or ``failed`` when the scenario is gone/inactive when the task starts. ``result`` (null
  until the end) = ``{"total": n, "result": [per-item entries]}`` (+ ``errors`` when failed), or with
  config ``task_result="counts"`` ``{"errors": [...], "total": n, "type": "workflow"}``, or ``"none"``:
  null.
* Lists: ``from_id`` is inclusive; ``next_from_id`` is omitted on the last page; the total is under
  ``total`` for ``workflows/list`` and ``total_count`` for ``databases/list`` unless config ``total_key``
  forces one spelling. The ``groups``/``ui_tags``/``attributes`` filters are ignored.
  ``databases/fields_get`` takes ``db_id`` (or ``id``) and returns ``[{category, title, name, required,
  type}]`` (``category`` ``custom``/``system``: the layout of the documented ``resources/fields_get``)
  (standard types: ``string``, ``int``, ``date``, ``datetime``, and ``phones`` for the phone list).
* Profile ids are 24 hex digits, counted from ``65a0c0ff0000000000000001`` after every reset.
* Every response has ``X-Request-Id`` (the caller's own, when it sends a short printable one).
"""
