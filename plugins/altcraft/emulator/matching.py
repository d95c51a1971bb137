"""The matching modes as the emulator serves them, read from the developer guide.

This table is the server's own, on purpose independent of the client's (``altcraft.api.matching``): a
wrong key name or any-of rule on either side then shows up as a refused request end to end.

"Matching" (https://guides.altcraft.com/en/developer-guide/37848489), columns "Search mode | matching |
Required fields":

* By email, from profile or subscription ``"email"`` — ``email``; by email from profile
  ``"email_profile"`` — ``email``; by email from subscriptions ``"email_sub"`` — ``email``
* By phone, from profile or subscription ``"phone"`` — ``phone``; by phone from subscriptions
  ``"phone_sub"`` — ``phone``
* By profile ID (only on update!) ``"profile_id"`` — ``profile_id``
* By push subscription ``"push_sub"`` — ``provider``, ``subscription_id``
* By custom field ``"custom"`` — ``field_name``, ``field_value``; search for a profile by subscription to
  the custom channel ``"custom_sub"`` — ``field_name``, ``field_value``
* By email or phone, from profile ``"email_phone"`` — ``email / phone``; by email or phone, from
  subscriptions ``"email_phone_sub"`` — ``email / phone`` (read: either one, or both)
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """A documented value of the request's ``matching``."""

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
    def key_names(self) -> tuple[str, ...]:
        """The request (or batch item) keys that carry the value(s) searched for."""
        return _REQUIRED[self]

    @property
    def any_of(self) -> bool:
        """``email / phone``: one of the keys is enough."""
        return self in (Mode.EMAIL_PHONE, Mode.EMAIL_PHONE_SUB)

    @property
    def needs_field_name(self) -> bool:
        """``field_name`` names the field (or subscription field) searched."""
        return self in (Mode.CUSTOM, Mode.CUSTOM_SUB)


#: "Required fields" of the Matching page, less ``field_name`` (a request-level parameter, one per batch).
_REQUIRED: dict[Mode, tuple[str, ...]] = {
    Mode.EMAIL: ("email",),
    Mode.EMAIL_PROFILE: ("email",),
    Mode.EMAIL_SUB: ("email",),
    Mode.PHONE: ("phone",),
    Mode.PHONE_SUB: ("phone",),
    Mode.PROFILE_ID: ("profile_id",),
    Mode.PUSH_SUB: ("provider", "subscription_id"),
    Mode.CUSTOM: ("field_value",),
    Mode.CUSTOM_SUB: ("field_value",),
    Mode.EMAIL_PHONE: ("email", "phone"),
    Mode.EMAIL_PHONE_SUB: ("email", "phone"),
}

_EVERY = frozenset(Mode)
_SCENARIO_BATCH = frozenset({Mode.EMAIL, Mode.EMAIL_PROFILE, Mode.PHONE, Mode.PROFILE_ID, Mode.CUSTOM})

#: The modes each endpoint's own page lists (refused elsewhere only with ``--strict``):
#:
#: * ``workflows/start`` (automation-scenarios/2195668): 'matching string "email" "phone" "profile_id"
#:   "custom"'
#: * ``workflows/import_and_start`` (automation-scenarios/28934227): the keys profile_id, email, phone,
#:   field_name, field_value "*Import: matching fields"; the batch pages call it their single version, so it
#:   takes what they list
#: * ``workflows/import_and_start_batch[_task]`` (automation-scenarios/33063492, 33063493):
#:   '"matching":"email" - from profile or subscriptions, "matching":"email_profile" - only from profile',
#:   "matching":"phone", "matching":"profile_id", "matching":"custom"
#: * ``profiles/import`` (profiles/import): '"email" "email_profile" "email_sub" "phone" "phone_sub"
#:   "profile_id" "push_sub" "custom" "custom_sub" "email_phone" "email_phone_sub"'; ``profiles/import_batch``
#:   (profiles/2195504), ``profiles/get`` and ``campaigns/triggers/start_batch`` (trigger-campaigns/37847471)
#:   refer to the same Matching page
#: * ``campaigns/triggers/import_and_start_batch`` (trigger-campaigns/37847473): "email" "email_profile"
#:   "phone" "profile_id" "custom"
DOCUMENTED_ON: dict[str, frozenset[Mode]] = {
    "workflows/start": frozenset({Mode.EMAIL, Mode.PHONE, Mode.PROFILE_ID, Mode.CUSTOM}),
    "workflows/import_and_start": _SCENARIO_BATCH,
    "workflows/import_and_start_batch": _SCENARIO_BATCH,
    "workflows/import_and_start_batch_task": _SCENARIO_BATCH,
    "profiles/import": _EVERY,
    "profiles/import_batch": _EVERY,
    "profiles/get": _EVERY,
    "campaigns/triggers/start_batch": _EVERY,
    "campaigns/triggers/import_and_start_batch": _SCENARIO_BATCH,
}


def undocumented(endpoint: str, mode: Mode) -> str | None:
    """Why ``mode`` is not on ``endpoint``'s page (None when it is, or the page lists none)."""
    listed = DOCUMENTED_ON.get(endpoint)
    if listed is None or mode in listed:
        return None
    names = ", ".join(sorted(listed))
    return f"matching {mode.value!r} is not documented for {endpoint} (documented: {names})"
