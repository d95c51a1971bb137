"""Matching modes: how Altcraft finds the profile a request is about (docs/api-conformance.md)."""

from __future__ import annotations

from enum import StrEnum


class MatchingMode(StrEnum):
    """Every matching mode the Altcraft API documents."""

    EMAIL = "email"
    EMAIL_PROFILE = "email_profile"
    EMAIL_SUB = "email_sub"
    PHONE = "phone"
    PHONE_SUB = "phone_sub"
    PROFILE_ID = "profile_id"
    PUSH_SUB = "push_sub"
    CUSTOM = "custom"
    CUSTOM_SUB = "custom_sub"
    EMAIL_PHONE = "email_phone"
    EMAIL_PHONE_SUB = "email_phone_sub"

    @property
    def key_fields(self) -> tuple[str, ...]:
        """Top-level request keys that carry the matching value(s) of one profile."""
        return _KEY_FIELDS[self]

    @property
    def needs_field_name(self) -> bool:
        """Whether the request must name the custom field (`field_name`) to match on."""
        return self in (MatchingMode.CUSTOM, MatchingMode.CUSTOM_SUB)

    @property
    def any_of(self) -> bool:
        """True when one of several keys is enough (`email_phone*`); otherwise all keys are required."""
        return self in (MatchingMode.EMAIL_PHONE, MatchingMode.EMAIL_PHONE_SUB)

    @property
    def can_create(self) -> bool:
        """`profile_id` matching only updates: it can never create a profile."""
        return self is not MatchingMode.PROFILE_ID


_KEY_FIELDS: dict[MatchingMode, tuple[str, ...]] = {
    MatchingMode.EMAIL: ("email",),
    MatchingMode.EMAIL_PROFILE: ("email",),
    MatchingMode.EMAIL_SUB: ("email",),
    MatchingMode.PHONE: ("phone",),
    MatchingMode.PHONE_SUB: ("phone",),
    MatchingMode.PROFILE_ID: ("profile_id",),
    MatchingMode.PUSH_SUB: ("provider", "subscription_id"),
    MatchingMode.CUSTOM: ("field_value",),
    MatchingMode.CUSTOM_SUB: ("field_value",),
    MatchingMode.EMAIL_PHONE: ("email", "phone"),
    MatchingMode.EMAIL_PHONE_SUB: ("email", "phone"),
}


_ALL = frozenset(MatchingMode)
_START = frozenset({MatchingMode.EMAIL, MatchingMode.PHONE, MatchingMode.PROFILE_ID, MatchingMode.CUSTOM})
_IMPORT_AND_START = _START | {MatchingMode.EMAIL_PROFILE}

#: Matching modes each endpoint's page documents (developer guide v72-v74, EN and RU;
#: docs/api-conformance.md).
#: ``workflows/start``: 'matching string "email" "phone" "profile_id" "custom"'
#:   https://guides.altcraft.com/en/developer-guide/automation-scenarios/2195668
#: ``workflows/import_and_start_batch`` / ``_task``: '"matching":"email" - from profile or subscriptions,
#:   "matching":"email_profile" - only from profile', phone, profile_id, custom
#:   .../automation-scenarios/33063492 and .../33063493 (RU: "по профилю и подпискам" / "только по профилю")
#: ``workflows/import_and_start``: its table lists the keys profile_id, email, phone, field_name + field_value
#:   ("*Import: matching fields") — .../automation-scenarios/28934227; the batch pages call it their
#:   single version, so ``email_profile`` is read as allowed there too.
#: ``profiles/import`` / ``import_batch``, ``campaigns/triggers/start_batch``: all eleven modes are listed
#:   .../profiles/import, .../profiles/2195504, .../campaigns/trigger-campaigns/37847471
#: ``campaigns/triggers/import_and_start_batch``: "email" "email_profile" "phone" "profile_id" "custom"
#:   .../campaigns/trigger-campaigns/37847473
DOCUMENTED_MATCHING: dict[str, frozenset[MatchingMode]] = {
    "workflows/start": _START,
    "workflows/import_and_start": _IMPORT_AND_START,
    "workflows/import_and_start_batch": _IMPORT_AND_START,
    "workflows/import_and_start_batch_task": _IMPORT_AND_START,
    "profiles/import": _ALL,
    "profiles/import_batch": _ALL,
    "profiles/get": _ALL,
    "campaigns/triggers/start_batch": _ALL,
    "campaigns/triggers/import_and_start_batch": _IMPORT_AND_START,
}


def undocumented_matching(endpoint: str, mode: MatchingMode | str) -> str | None:
    """Why ``mode`` is not documented for ``endpoint`` (None when it is, or the endpoint is not listed)."""
    allowed = DOCUMENTED_MATCHING.get(endpoint.strip("/"))
    if allowed is None or MatchingMode(mode) in allowed:
        return None
    names = ", ".join(sorted(m.value for m in allowed))
    return f"matching {MatchingMode(mode).value!r} is not documented for {endpoint} (documented: {names})"


#: The endpoint each delivery mode launches through.
LAUNCH_ENDPOINTS = {
    "single": "workflows/import_and_start",
    "batch": "workflows/import_and_start_batch",
    "async": "workflows/import_and_start_batch_task",
}


def check_launch_matching(
    delivery: str, mode: MatchingMode | str, *, allow_undocumented: bool = False
) -> None:
    """Refuse a matching mode the docs do not list for the delivery's endpoint.

    :raises ValueError: naming the mode, the endpoint and the documented modes, unless
        ``allow_undocumented`` (then the server decides; the probe can tell what it does).
    """
    why = undocumented_matching(LAUNCH_ENDPOINTS[delivery], mode)
    if why and not allow_undocumented:
        raise ValueError(f"{why}; set allow_undocumented_matching to try it anyway")
