"""Matching modes: how Altcraft finds the profile a request is about (API reference §9)."""

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
