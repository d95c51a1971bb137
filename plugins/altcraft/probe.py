"""Conformance probe: settle on a real Altcraft account what the public docs leave open.

``python -m altcraft probe --conn-id altcraft_default [--scenario N] [--db N] [--pipeline spec.yaml]
[--test-contact EMAIL|PHONE] [--record FILE] [--keep-contact]``

Read-only by default: the token works in the ``Authorization: Bearer`` header and in the body, the scenario
exists and is active, its database is the expected one, every field the pipeline's mapping writes exists
with a compatible type (``databases/fields_get``), the matching mode is documented for the endpoint the
pipeline uses. With ``--test-contact`` it launches that one contact into the scenario through ``single``,
``batch`` (each item layout of :mod:`altcraft.api.layouts`) and ``async``, and reports what was accepted
and what each answer looked like. **Each launch puts the contact into the scenario again.** It then checks
that a batch's results come in the request's order (`result_order`): batches holding the test contact and
items without a matching key (which name nobody, so Altcraft refuses them) -- ``profiles/import_batch``
with ``skip_triggers`` twice (the contact first, then last; no launch) and the scenario batch once (the
contact between two such items: one more launch of the test contact, and of nobody else).

``--record FILE`` writes every exchange (token replaced by ``***``; emails and phones masked unless
``--keep-contact``) as JSON that ``python -m altcraft.emulator --replay FILE`` answers from.
The output is a short table to paste into a support ticket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import requests
from pydantic import ValidationError

from altcraft import __version__
from altcraft.answer_size import DEFAULT_MAX_ANSWER_BYTES, AnswerTooLarge, read_capped
from altcraft.api.layouts import BatchItemLayout, batch_item, flat_item, key_as_fields
from altcraft.api.matching import LAUNCH_ENDPOINTS, MatchingMode, undocumented_matching
from altcraft.api.models import (
    TEXT_FIELD_TYPES,
    DatabaseField,
    Page,
    ProfileResult,
    Scenario,
    TaskState,
    TaskStatus,
    error_code,
)
from altcraft.api.protocol import (
    api_path,
    clean_document,
    decode_answer,
    encode_body,
    header_bytes,
    parse_answer,
    remove_token,
    request_headers,
)
from altcraft.deadline import Deadline, watch_sockets
from altcraft.http_environment import pin_environment
from altcraft.masking import scrub
from altcraft.unanswered import why_unanswered

if TYPE_CHECKING:
    from altcraft.hooks.connection import AltcraftConnection

RECORDING_FORMAT = "altcraft-exchanges/1"
#: Our mapping types → Altcraft field types they may be written to (``unicode``: resources/fields_get).
_COMPATIBLE = {
    "string": set(TEXT_FIELD_TYPES),
    "email": {*TEXT_FIELD_TYPES, "email"},
    "phone": {*TEXT_FIELD_TYPES, "phones", "phone"},
    "int": {"int", "integer", "float", "number"},
    "float": {"float", "number", "double"},
    "bool": {"bool", "boolean"},
    "date": {"date", "datetime"},
    "datetime": {"datetime", "date"},
    "tags": {"tags", "tag"},
}


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer as the hooks read it: cleaned by `clean_document` (no token, server texts masked)."""

    status: int
    document: Any

    @property
    def ok(self) -> bool:
        """HTTP 2xx and an ``error`` the hooks read as 0 (`Envelope`: absent, null, 0 or "0")."""
        if not (200 <= self.status < 300 and isinstance(self.document, dict)):
            return False
        try:
            return error_code(self.document.get("error")) == 0
        except ValueError:
            return False

    @property
    def token_refused(self) -> bool:
        """HTTP 401 or 403, or an ``error`` of 401 or 403: the token is wrong or has no access."""
        doc = self.document if isinstance(self.document, dict) else {}
        try:
            code = error_code(doc.get("error"))
        except ValueError:
            code = None
        return bool({self.status, code} & {401, 403})

    @property
    def error(self) -> str:
        doc = self.document if isinstance(self.document, dict) else {}
        if self.status == 0:  # no answer: what the exchange saw (`why_unanswered`), or an answer too large
            return scrub(str(doc.get("error_text", "")))
        return scrub(f"HTTP {self.status}, error {doc.get('error')}: {doc.get('error_text', '')}".strip())


@dataclass
class Exchanger:
    """POSTs API calls with the token where asked, keeping every exchange for ``--record``.

    What it reports is cleaned twice: each answer as the hooks clean it, and the report itself
    (`clean`), which quotes server text (the keys of an answer's shape, too)."""

    base_url: str
    token: str = field(repr=False)
    timeout: float = 60.0
    verify: bool | str = True
    cert: str | None = None
    proxies: dict[str, str] | None = field(default=None, repr=False)  # a proxy URL may hold its password
    keep_contact: bool = False
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._session = watch_sockets(requests.Session())
        self._session.verify, self._session.cert = self.verify, self.cert
        self._session.proxies = self.proxies or {}
        pin_environment(self._session, self.base_url)

    def post(self, endpoint: str, body: dict[str, Any], *, auth: str = "header") -> Answer:
        headers = request_headers(self.token, __version__)
        if auth == "body":
            headers.pop("Authorization")
        payload = encode_body(body, token=self.token if auth == "body" else None)
        deadline = Deadline(self.timeout)  # the hooks' guards: one deadline, a size cap, no redirect
        try:
            with deadline:
                response = self._session.post(
                    self.base_url + api_path(endpoint),
                    data=payload,
                    headers=header_bytes(headers),
                    timeout=self.timeout,
                    allow_redirects=False,
                    stream=True,
                )
                content = read_capped(response, self.max_answer_bytes)
        except requests.RequestException as exc:
            kind = f"no complete answer within {self.timeout:g}s" if deadline.expired else None
            answer = Answer(0, {"error": -1, "error_text": kind or why_unanswered(exc, self.base_url)})
        except AnswerTooLarge as exc:
            answer = Answer(0, {"error": -1, "error_text": str(exc)})
        else:
            document = decode_answer(content)  # as the hooks read it
            if document is None:
                document = {"error": -1, "error_text": f"not JSON ({len(content)} bytes)"}
            answer = Answer(response.status_code, document)
        self.exchanges.append(
            {
                "endpoint": endpoint,
                "auth": auth,
                "request": self._recorded(body),
                "status": answer.status,
                "response": self._recorded(answer.document),
            }
        )
        return Answer(answer.status, clean_document(answer.document, self.token))

    def close(self) -> None:
        """Close the session's connections (the Test button runs in the long-lived API server)."""
        self._session.close()

    def __enter__(self) -> Exchanger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def clean(self, text: str) -> str:
        """Text for the report (the table, the Test button's message): no token, no email or phone."""
        return scrub(remove_token(text, self.token))

    def _recorded(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self._recorded(k): "***" if k == "token" else self._recorded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._recorded(v) for v in value]
        if isinstance(value, str):
            return remove_token(value, self.token) if self.keep_contact else self.clean(value)
        return value

    def recording(self) -> dict[str, Any]:
        return {
            "format": RECORDING_FORMAT,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "client": f"airflow-provider-altcraft/{__version__}",
            "exchanges": self.exchanges,
        }


@dataclass(frozen=True, slots=True)
class Row:
    check: str
    result: str  # ok, FAIL, warn, skip, accepted, refused
    detail: str = ""


@dataclass
class Plan:
    """What to probe; ``mapping``/``mode``/``allow_undocumented`` come from ``--pipeline``."""

    scenario: int | None = None
    db: int | None = None
    mapping: Any = None
    mode: str | None = None
    allow_undocumented: bool = False
    test_contact: str | None = None
    task_timeout: float = 60.0
    marker_field: str | None = None


def read_only(ex: Exchanger, plan: Plan) -> list[Row]:
    """The checks that change nothing."""
    rows = _token_rows(ex)
    db = plan.db
    if plan.scenario is not None:
        scenario_rows, db = _scenario_rows(ex, plan)
        rows += scenario_rows
    if plan.mapping is not None:
        rows.append(_matching_row(plan))
    if plan.mapping is None and plan.marker_field is None:
        return rows
    if db is None:
        return [*rows, Row("fields", "skip", "no database")]
    answer = ex.post("databases/fields_get", {"db_id": db})
    if not answer.ok:
        return [*rows, Row("fields", "FAIL", answer.error)]
    fields = parse_answer(
        "databases/fields_get",
        lambda data: [DatabaseField.model_validate(item) for item in data or []],
        answer.document.get("data"),
    )
    if plan.mapping is not None:
        rows += _field_rows(fields, plan.mapping, db)
    if plan.marker_field is not None:
        rows.append(_marker_row(fields, plan.marker_field))
    return rows


def launches(ex: Exchanger, plan: Plan) -> list[Row]:
    """Launch ``plan.test_contact`` through single, every batch layout and async."""
    if plan.scenario is None:
        return [Row("test contact", "skip", "--scenario (or --pipeline) is needed to launch")]
    contact = plan.test_contact or ""
    matching = MatchingMode.EMAIL if "@" in contact else MatchingMode.PHONE
    match = {matching.key_fields[0]: contact}
    common = {"workflow_id": plan.scenario, "matching": matching.value, "skip_triggers": True}
    rows = []
    single = ex.post("workflows/import_and_start", {**common, **match, "data": key_as_fields(match, {})})
    rows.append(_launch_row("single", single, single.ok and "profile_id" in single.document))
    for layout in BatchItemLayout:
        item = batch_item(match, {}, layout)
        answer = ex.post("workflows/import_and_start_batch", {**common, "data": [item]})
        rows.append(_launch_row(f"batch ({layout.value})", answer, _item_ok(answer)))
    rows.append(_async_row(ex, {**common, "data": [batch_item(match, {})]}, plan.task_timeout))
    return rows


#: An item with no matching key: it names nobody, so Altcraft refuses it on its own (or says it cannot).
NOBODY: dict[str, Any] = {}


def result_order(ex: Exchanger, plan: Plan) -> list[Row]:
    """Whether per-contact results follow the request's order (the delivery reads them by position, see
    :mod:`altcraft.api.result_identity`): batches mixing the test contact with items that name nobody, which
    must be answered refused at their positions and the contact launched, with one profile id, at its own."""
    contact = plan.test_contact or ""
    matching = MatchingMode.EMAIL if "@" in contact else MatchingMode.PHONE
    match = {matching.key_fields[0]: contact}
    rows = []
    db = plan.db if plan.db is not None else _scenario_db(ex, plan.scenario)
    if db is None:
        rows.append(Row("result order (import)", "skip", "--db (or --scenario) is needed"))
    else:
        common = {"db_id": db, "matching": matching.value, "skip_triggers": True}
        item = flat_item(match, {})
        answers = [ex.post("profiles/import_batch", {**common, "data": data}) for data in _orders(item)]
        rows.append(_order_row("result order (import)", answers, _orders(item)))
    if plan.scenario is not None:
        common = {"workflow_id": plan.scenario, "matching": matching.value, "skip_triggers": True}
        data = [{"data": NOBODY}, batch_item(match, {}), {"data": NOBODY}]
        answer = ex.post("workflows/import_and_start_batch", {**common, "data": data})
        rows.append(_order_row("result order (batch)", [answer], [data]))
    return rows


def run(ex: Exchanger, plan: Plan) -> list[Row]:
    rows = read_only(ex, plan)
    if plan.test_contact:
        rows += launches(ex, plan)
        rows += result_order(ex, plan)
    return rows


def table(rows: Iterable[Row]) -> str:
    """A short fixed-width table to paste into a support ticket."""
    rows = list(rows)
    width = max([len("check"), *(len(r.check) for r in rows)])
    lines = [f"{'check':<{width}} | result   | detail", f"{'-' * width}-+----------+-------"]
    lines += [f"{r.check:<{width}} | {r.result:<8} | {r.detail}" for r in rows]
    return "\n".join(lines)


def failed(rows: Sequence[Row]) -> bool:
    return any(r.result == "FAIL" for r in rows)


# ----------------------------------------------------------------------------------------------- checks


def _token_rows(ex: Exchanger) -> list[Row]:
    """The token in the header, then in the body; the body's request is not made when the header's got no
    answer at all (refused, timed out, TLS): it would fail alike after as long a wait, and the Test button
    waited twice the timeout, past the 60 s Airflow gives a connection test run on a worker."""
    header = ex.post("databases/list", {"limit": 1})
    if header.status == 0:
        body = Row("token (body)", "skip", "no answer to the header's request")
    else:
        body = _token_row(ex.post("databases/list", {"limit": 1}, auth="body"), "body")
    return [_token_row(header, "header"), body]


def _token_row(answer: Answer, auth: str) -> Row:
    where = "Authorization: Bearer header" if auth == "header" else "body 'token'"
    if answer.ok:
        page = parse_answer("databases/list", Page.model_validate, answer.document)
        seen = page.total if page.total is not None else len(page.data)
        return Row(f"token ({auth})", "ok", f"accepted in the {where}; {seen} database(s) visible")
    hint = ": check the API token (password field)" if answer.token_refused else ""
    return Row(f"token ({auth})", "FAIL" if auth == "header" else "warn", f"{where}: {answer.error}{hint}")


def _scenario_rows(ex: Exchanger, plan: Plan) -> tuple[list[Row], int | None]:
    answer = ex.post("workflows/list", {"from_id": plan.scenario, "limit": 1})
    name = f"scenario {plan.scenario}"
    if not answer.ok:
        return [Row(name, "FAIL", answer.error)], plan.db
    scenarios = parse_answer(
        "workflows/list",
        lambda data: [Scenario.model_validate(item) for item in data or []],
        answer.document.get("data"),
    )
    found = [s for s in scenarios if s.id == plan.scenario]
    if not found:
        return [Row(name, "FAIL", "not in workflows/list for this token")], plan.db
    scenario = found[0]
    rows = [
        Row(name, "ok" if scenario.is_active else "FAIL", "active" if scenario.is_active else "NOT active")
    ]
    if plan.db is not None and scenario.db_id not in (None, plan.db):
        rows.append(Row("database", "FAIL", f"scenario works on database {scenario.db_id}, not {plan.db}"))
    else:
        rows.append(Row("database", "ok", f"scenario works on database {scenario.db_id}"))
    return rows, scenario.db_id if scenario.db_id is not None else plan.db


def _matching_row(plan: Plan) -> Row:
    matching = plan.mapping.matching
    endpoint = LAUNCH_ENDPOINTS.get(plan.mode or "batch", LAUNCH_ENDPOINTS["batch"])
    why = undocumented_matching(endpoint, matching)
    if why is None:
        return Row("matching", "ok", f"{matching.value} is documented for {endpoint}")
    return Row("matching", "warn" if plan.allow_undocumented else "FAIL", why)


def _field_rows(fields: Sequence[DatabaseField], mapping: Any, db: int) -> list[Row]:
    known = {f.name: f.type for f in fields}
    wanted = {target: spec.type for target, spec in mapping.fields.items()}
    if mapping.matching is MatchingMode.CUSTOM and mapping.field_name:
        wanted.setdefault(mapping.field_name, "string")
    missing = sorted(name for name in wanted if name not in known)
    clashing = sorted(
        f"{name} ({ours} → {known[name]})"
        for name, ours in wanted.items()
        if name in known and known[name].lower() not in _COMPATIBLE.get(ours, {ours})
    )
    rows = [Row("fields", "FAIL" if missing else "ok", f"missing in database {db}: {', '.join(missing)}")]
    if not missing:
        rows = [Row("fields", "ok", f"{len(wanted)} mapped field(s) exist in database {db}")]
    if clashing:
        rows.append(Row("field types", "warn", "may not fit: " + ", ".join(clashing)))
    return rows


def _marker_row(fields: Sequence[DatabaseField], marker_field: str) -> Row:
    from altcraft.reconciliation import marker_field_problem

    problem = marker_field_problem(fields, marker_field)
    if problem is not None:
        return Row("launch marker", "FAIL", problem)
    return Row("launch marker", "ok", f"custom string field {marker_field!r} can carry the marker")


def _launch_row(name: str, answer: Answer, accepted: bool) -> Row:
    if not accepted:
        return Row(name, "refused", answer.error if not answer.ok else _shape(answer.document))
    return Row(name, "accepted", _shape(answer.document))


def _item_ok(answer: Answer) -> bool:
    """Whether the one contact sent was launched as the delivery reads it: its result holds an ``error`` code
    of 0 (`ProfileResult`; each entry has its own ``error``, profiles/2195496)."""
    result = answer.document.get("result") if answer.ok else None
    if not isinstance(result, list) or len(result) != 1 or not isinstance(result[0], dict):
        return answer.ok
    return bool(_launched(result[0]))


def _async_row(ex: Exchanger, body: dict[str, Any], timeout: float) -> Row:
    answer = ex.post("workflows/import_and_start_batch_task", body)
    data = answer.document.get("data") if answer.ok else None
    task_id = data.get("task_id") if isinstance(data, dict) else None
    if not task_id:
        return Row(
            "async",
            "refused",
            answer.error if not answer.ok else "no data.task_id: " + _shape(answer.document),
        )
    deadline = time.monotonic() + timeout
    status = parse_answer("tasks/status", TaskStatus.model_validate, {"task_id": task_id})
    while time.monotonic() < deadline:
        polled = ex.post("tasks/status", {"task_id": task_id})
        if not polled.ok:
            return Row("async", "FAIL", f"tasks/status: {polled.error}")
        payload = polled.document.get("data")
        payload = {"task_id": task_id, **(payload if isinstance(payload, dict) else {})}
        status = parse_answer("tasks/status", TaskStatus.model_validate, payload)
        if status.state.is_terminal:
            result = "accepted" if status.state is TaskState.SUCCEEDED else "refused"
            return Row("async", result, f"status {status.status!r}, result {_shape(status.result)}")
        time.sleep(min(2.0, max(0.2, timeout / 50)))
    return Row("async", "warn", f"task {task_id} {status.still} after {timeout:g} s")


def _orders(item: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The contact's item after, then before, an item that names nobody."""
    return [[NOBODY, item], [item, NOBODY]]


def _order_row(name: str, answers: Sequence[Answer], sent: Sequence[Sequence[dict[str, Any]]]) -> Row:
    """Whether each answer refused the items that name nobody and not the contact, at their positions, the
    contact always as one profile; and the keys the results carry (an ``index`` or a matching value would
    say which item each answers)."""
    carried: set[str] = set()
    ids: set[str] = set()
    for answer, items in zip(answers, sent, strict=True):
        if not answer.ok:
            return Row(name, "warn", f"cannot tell: the batch was refused as a whole ({answer.error})")
        results = answer.document.get("result")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            return Row(name, "FAIL", f"no per-contact result list: {_shape(answer.document)}")
        if len(results) != len(items):
            return Row(name, "FAIL", f"{len(results)} result(s) for {len(items)} item(s)")
        read = [_launched(r) for r in results]
        if None in read:
            return Row(name, "FAIL", f"result {read.index(None) + 1} has no error code the delivery can read")
        refused = [not launched for launched in read]
        nobody = [_names_nobody(item) for item in items]
        if all(refused) or not any(refused):
            return Row(
                name, "warn", "cannot tell: every item was " + ("refused" if all(refused) else "accepted")
            )
        if refused != nobody:
            return Row(name, "FAIL", "results are NOT in request order: deliver with mode single")
        carried.update(key for r in results for key in r)
        ids.update(
            str(r["profile_id"])
            for r, no in zip(results, nobody, strict=True)
            if not no and "profile_id" in r
        )
    if len(ids) > 1:
        return Row(name, "FAIL", f"the test contact's results name {len(ids)} different profiles")
    keys = ", ".join(sorted(carried))
    return Row(name, "ok", f"results in request order in {len(answers)} batch(es); each carries {keys}")


def _launched(result: dict[str, Any]) -> bool | None:
    """Whether a per-profile result says launched (`ProfileResult`), None when it cannot be read."""
    try:
        return ProfileResult.model_validate(result).ok
    except ValidationError:
        return None


def _names_nobody(item: dict[str, Any]) -> bool:
    return item is NOBODY or item.get("data") is NOBODY


def _scenario_db(ex: Exchanger, scenario: int | None) -> int | None:
    """The database the scenario works on (``list_id`` of ``workflows/list``), None if it cannot be read."""
    if scenario is None:
        return None
    answer = ex.post("workflows/list", {"from_id": scenario, "limit": 1})
    data = answer.document.get("data") if answer.ok else None
    found = [item for item in data or [] if isinstance(item, dict) and item.get("id") == scenario]
    return Scenario.model_validate(found[0]).db_id if found else None


def _shape(value: Any, depth: int = 0) -> str:
    """The keys and types of an answer, without its values: what a support ticket needs."""
    if isinstance(value, dict):
        if depth > 2:
            return "{…}"
        return "{" + ", ".join(f"{k}: {_shape(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return f"[{len(value)} x {_shape(value[0], depth + 1)}]" if value else "[]"
    return "null" if value is None else type(value).__name__


# ------------------------------------------------------------------------------------------- from CLI


def exchanger_for_connection(conn_id: str, *, keep_contact: bool = False) -> Exchanger:
    """An :class:`Exchanger` for an Airflow connection of type ``altcraft``."""
    from altcraft.hooks.altcraft import AltcraftHook
    from altcraft.hooks.connection import read_connection

    return exchanger_for(
        read_connection(conn_id, AltcraftHook.get_connection(conn_id)), keep_contact=keep_contact
    )


def exchanger_for(connection: AltcraftConnection, *, keep_contact: bool = False) -> Exchanger:
    """An :class:`Exchanger` with a connection's URL, token and settings (timeout, TLS, proxies, cap)."""
    settings, url, token = connection
    return Exchanger(
        url,
        token,
        timeout=settings.timeout,
        verify=settings.verify,
        cert=settings.cert,
        proxies=settings.proxies,
        keep_contact=keep_contact,
        max_answer_bytes=settings.max_answer_bytes,
    )


def plan_from_pipeline(path: Path) -> tuple[Plan, str]:
    """Scenario, database, mapping and mode of a pipeline spec, and its connection id."""
    from altcraft.pipelines.spec import SpecError, read_spec

    spec = read_spec(path)
    if isinstance(spec, SpecError):
        raise ValueError(str(spec))
    plan = Plan(
        scenario=spec.scenario.id,
        db=spec.scenario.db_id,
        mapping=spec.mapping,
        mode=spec.delivery.mode,
        allow_undocumented=bool(getattr(spec.delivery, "allow_undocumented_matching", False)),
        marker_field=spec.scenario.launch_marker_field,
    )
    return plan, spec.altcraft_conn_id


def open_record(path: Path) -> TextIO:
    """The ``--record`` file, opened (not emptied) before anything is sent: one that cannot be written stops
    the probe before it launches a test contact whose answers it would then lose."""
    try:
        return path.open("a", encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot write --record {path}: {error.strerror or error}") from error


def main(args: Any, out: Callable[[str], None] = print) -> int:
    with open_record(args.record) if args.record else nullcontext() as record:
        return _probe(args, record, out)


def _probe(args: Any, record: TextIO | None, out: Callable[[str], None]) -> int:
    plan, conn_id = Plan(), args.conn_id
    if args.pipeline:
        plan, spec_conn = plan_from_pipeline(args.pipeline)
        conn_id = conn_id or spec_conn
    plan.scenario = args.scenario if args.scenario is not None else plan.scenario
    plan.db = args.db if args.db is not None else plan.db
    plan.marker_field = args.marker_field or plan.marker_field
    plan.test_contact = args.test_contact
    plan.task_timeout = args.task_timeout
    with exchanger_for_connection(conn_id or "altcraft_default", keep_contact=args.keep_contact) as ex:
        rows = run(ex, plan)
    out(ex.clean(table(rows)))
    if record is not None:
        record.truncate(0)
        record.write(json.dumps(ex.recording(), ensure_ascii=False, indent=1))
        out(f"recorded {len(ex.exchanges)} exchange(s) to {args.record}")
    return 1 if failed(rows) else 0
