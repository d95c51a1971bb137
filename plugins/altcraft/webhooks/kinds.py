"""How a webhook delivery is authenticated and turned into contact records, per kind.

A `WebhookKind` knows three things about one kind of sender: `verify` (constant-time; raises
`Unauthorized`), `parse` (the body as a list of records; raises `BadPayload`) and `delivery_key` (what
identifies a delivery, so a replay is stored once). The endpoint only calls these three, so a CRM preset
(amoCRM's form-encoded body with a secret in the URL, Bitrix24's application token, HubSpot's
``X-HubSpot-Signature-v3``) is one more `WebhookKind` registered in `KINDS`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

SECRET_HEADER = "x-altcraft-webhook-secret"  # ruff: ignore[hardcoded-password-string]
SIGNATURE_HEADER = "x-altcraft-signature"
TIMESTAMP_HEADER = "x-altcraft-timestamp"
IDEMPOTENCY_HEADER = "idempotency-key"
#: A signed delivery further than this (seconds) from now is refused: a captured one cannot be replayed later.
SIGNATURE_TOLERANCE = 300


class Unauthorized(Exception):
    """The delivery is not from the pipeline's sender: answer 401 and store nothing."""


class BadPayload(ValueError):
    """The body is not what this kind sends: answer 400 and store nothing."""


@dataclass(frozen=True)
class WebhookRequest:
    """What the endpoint received; header names are lower case."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


class WebhookKind:
    """One kind of sender. Subclasses set `name` and override `verify` (and `parse` if not JSON)."""

    name: ClassVar[str]

    def verify(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        raise NotImplementedError

    def parse(self, request: WebhookRequest) -> list[dict[str, Any]]:
        """A JSON object (one contact) or a JSON array of objects."""
        try:
            data = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadPayload(
                f"the body is not JSON: {error.msg if hasattr(error, 'msg') else error}"
            ) from None
        records = data if isinstance(data, list) else [data]
        if not records or not all(isinstance(record, dict) for record in records):
            raise BadPayload("expected a JSON object (one contact) or a non-empty array of objects")
        return records

    def delivery_key(self, request: WebhookRequest) -> str:
        """SHA-256 of the sender's ``Idempotency-Key`` header if given, else of the body."""
        given = request.headers.get(IDEMPOTENCY_HEADER)
        material = b"key:" + given.encode() if given else b"body:" + request.body
        return hashlib.sha256(material).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class SharedSecret(WebhookKind):
    """``X-Altcraft-Webhook-Secret: <secret>``."""

    name = "secret"

    def verify(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        if not _same(request.headers.get(SECRET_HEADER, ""), secret):
            raise Unauthorized(f"missing or wrong {SECRET_HEADER} header")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with the secret over ``<timestamp>.<body>``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class HmacSignature(WebhookKind):
    """``X-Altcraft-Timestamp: <Unix seconds>`` and ``X-Altcraft-Signature: sha256=<hex>`` (`signature`)."""

    name = "hmac"

    def verify(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "")
        expected = signature(secret, stamp, request.body)
        if not _same(given, expected):  # compared first: timing says nothing about the timestamp check
            raise Unauthorized(f"missing or wrong {SIGNATURE_HEADER} header")
        try:
            age = abs((time.time() if now is None else now) - int(stamp))
        except ValueError:
            raise Unauthorized(f"{TIMESTAMP_HEADER} is not a Unix time") from None
        if age > SIGNATURE_TOLERANCE:
            raise Unauthorized(f"{TIMESTAMP_HEADER} is more than {SIGNATURE_TOLERANCE} s away from now")


KINDS: dict[str, WebhookKind] = {kind.name: kind for kind in (SharedSecret(), HmacSignature())}
