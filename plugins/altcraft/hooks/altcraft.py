"""AltcraftHook: every Altcraft API call the provider uses, on top of Airflow's HttpHook.

The token travels as ``Authorization: Bearer`` (and, by default, as ``token`` in the JSON body for older
on-premises versions); never in the URL. It is registered with Airflow's secret masker and redacted
from every error text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NoReturn

import requests
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.log import mask_secret
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from altcraft import __version__
from altcraft.answer_size import AnswerTooLarge, read_capped
from altcraft.api.calls import AltcraftCalls
from altcraft.api.errors import AltcraftAnswerTooLarge, AltcraftError
from altcraft.api.protocol import api_path, encode_body, header_bytes, parse_response, request_headers
from altcraft.api.result_identity import texts_about
from altcraft.api.retry import as_uncertain
from altcraft.api.transport import Observed, transport_error
from altcraft.deadline import Deadline, watch_sockets
from altcraft.hooks.connection import AltcraftConnectionSettings, read_connection
from altcraft.http_environment import pin_environment
from altcraft.unanswered import explained


class AltcraftHook(HttpHook, AltcraftCalls):
    """Interact with the Altcraft platform API: the calls of :class:`~altcraft.api.calls.AltcraftCalls`
    over a keep-alive ``requests`` session.

    :param altcraft_conn_id: connection of type ``altcraft``: host = platform URL, password = API token.
    """

    conn_name_attr = "altcraft_conn_id"
    default_conn_name = "altcraft_default"
    conn_type = "altcraft"
    hook_name = "Altcraft"

    def __init__(self, altcraft_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(method="POST", http_conn_id=altcraft_conn_id, **kwargs)
        self.altcraft_conn_id = altcraft_conn_id
        self._session: requests.Session | None = None
        self._token: str = ""
        self.settings = AltcraftConnectionSettings()
        self.requests_made = 0

    # ------------------------------------------------------------------------------------------ session

    def get_conn(
        self, headers: dict[str, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """A keep-alive session authenticated with the connection's token (created once per hook)."""
        if self._session is None:
            self.settings, self.base_url, self._token = read_connection(
                self.altcraft_conn_id, self.get_connection(self.altcraft_conn_id)
            )
            self._base_url_initialized = True
            mask_secret(self._token)
            session = requests.Session()
            session.headers.update(header_bytes(request_headers(self._token, __version__)))
            session.verify = self.settings.verify
            session.cert = self.settings.cert
            session.proxies = self.settings.proxies or {}
            pin_environment(session, self.base_url)
            self._session = watch_sockets(self._configure_session_from_mount_adapters(session))
        if headers:
            self._session.headers.update(headers)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def call(
        self,
        endpoint: str,
        body: dict[str, Any],
        *,
        raw_data: bytes | None = None,
        launching: bool = False,
        keys: Sequence[str] = (),
    ) -> dict[str, Any]:
        """POST one API method and return its decoded answer, retrying as the policy allows.

        :param launching: the call puts profiles into a scenario; see :mod:`altcraft.api.retry`.
        :param keys: the profiles in the request, carried by :class:`AltcraftDeliveryUncertain`; a lone
            one's values are masked in the answer's texts (`contact_values`).
        """
        session = self.get_conn()
        payload = encode_body(
            body, token=self._token if self.settings.token_in_body else None, raw_data=raw_data
        )
        url = self.base_url + api_path(endpoint)
        # a request about one contact: its values masked in the answer; about several: in an error's text
        known, about = texts_about(keys, body, raw_data)

        def attempt() -> dict[str, Any]:
            self.requests_made += 1
            started = time.monotonic()
            deadline = Deadline(self.settings.timeout)
            try:
                with deadline:  # connect + send + the whole answer, not each socket read
                    # never follow a redirect: requests would re-send the body (token included) elsewhere
                    response = session.post(
                        url, data=payload, timeout=self.settings.timeout, allow_redirects=False, stream=True
                    )
                    body = read_capped(response, self.settings.max_answer_bytes)
            except requests.RequestException as exc:
                failure: AltcraftError = transport_error(
                    _observed(exc, deadline, self.base_url), endpoint=endpoint, timeout=deadline.seconds
                )
            except AnswerTooLarge as exc:
                failure = AltcraftAnswerTooLarge(exc.limit, endpoint=endpoint)
            else:
                failure = None
            if failure is not None:
                raise failure  # outside `except`: see `altcraft.api.transport.transport_error`
            self.log.debug(
                "POST %s -> HTTP %s in %.3fs", endpoint, response.status_code, time.monotonic() - started
            )
            return parse_response(
                endpoint,
                response.status_code,
                response.headers,
                body,
                secret=self._token,
                known=known,
                about=about,
            )

        try:
            return self.settings.retry_policy.retrying(launching=launching)(attempt)
        except AltcraftError as exc:
            if launching and (uncertain := as_uncertain(exc, endpoint, keys)) is not exc:
                raise uncertain from exc
            raise  # unchanged (not its own cause)

    def run(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused, with HttpHook's other generic request methods: they follow redirects, log raw answers
        and retry any request, a scenario launch too, bypassing the guards of `call`."""
        raise NotImplementedError(
            f"{type(self).__name__} sends no generic HTTP request (HttpHook.run and its kin): use "
            "AltcraftHook.call or the named API methods (start, import_and_start_batch, ...)"
        )

    run_and_check = run_with_advanced_retry = run

    def scenario_url(self, scenario_id: int | str) -> str:
        """Link to the scenario in the Altcraft UI (pattern set by the ``scenario_url`` extra)."""
        self.get_conn()
        return self.settings.scenario_url.format(base_url=self.base_url, scenario_id=scenario_id)

    def test_connection(self) -> tuple[bool, str]:
        """The read-only part of the conformance probe: the token in the header and in the body.

        The connection form's Test button runs it on a copy of the connection under a random id: messages
        name its fields (Platform URL, password, Extra), never that id. Its HTTP session is closed after."""
        from altcraft.probe import Plan, exchanger_for, failed, read_only

        try:
            connection = read_connection(None, self.get_connection(self.altcraft_conn_id))
            mask_secret(connection.token)
            exchanger = exchanger_for(connection)  # a CA bundle variable naming no file is refused here
        except ValueError as exc:
            return False, f"Altcraft connection test failed: {exc}"
        with exchanger:
            try:
                rows = read_only(exchanger, Plan())
            except (ValueError, AltcraftError) as exc:  # an answer that does not fit: its places, not values
                return False, f"Altcraft connection test failed: {exc}"
            summary = exchanger.clean("; ".join(f"{row.check}: {row.result} ({row.detail})" for row in rows))
        if failed(rows):
            return False, f"Altcraft connection test failed: {summary}"
        return True, f"Connected to {connection.base_url}; {summary}"


#: requests refuses to build these requests: nothing is sent.
_UNBUILDABLE = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


def _observed(exc: requests.RequestException, deadline: Deadline, url: str) -> Observed:
    """The transport adapter of requests: what a failure says about the exchange (altcraft.api.transport)."""
    return Observed(
        built=not isinstance(exc, _UNBUILDABLE),
        connected=not _never_connected(exc),
        timed_out=deadline.expired,
        kind=type(exc).__name__,
        why=None if deadline.expired else explained(exc, url),
    )


def _never_connected(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: BaseException | None = exc
    while seen is not None:
        reason = getattr(seen, "reason", None)
        if isinstance(seen, NewConnectionError | ConnectTimeoutError) or isinstance(
            reason, NewConnectionError | ConnectTimeoutError
        ):
            return True
        nxt = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = nxt or seen.__cause__ or seen.__context__
        if seen is exc:
            break
    return False
