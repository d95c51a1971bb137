"""The exactly-once rules as pure functions: no SQL, no clock, no Airflow.

What a claim decides for each contact (per the relaunch policy), which rows recovery turns uncertain, what
a settlement or a reconciliation verdict does to a contact row, and how combined-mode keys resolve to one
identity. :mod:`altcraft.ledger.store` reads the rows these functions need, in one transaction, and
writes what they return. See ``docs/ledger.md`` for the tables these rules are written against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from altcraft.ledger.model import (
    Claim,
    ContactStatus,
    Outcome,
    Resolution,
    RunRef,
    Scope,
    Settlement,
    UncertainContact,
)
from altcraft.relaunch import RelaunchPolicy
from altcraft.validation import text_number_key

#: A settlement for a key of a sent claim that got no answer: it may have been launched.
NO_ANSWER = Settlement(Outcome.UNCERTAIN, text="no result was reported for this contact")
#: Statuses a settlement may overwrite (uncertain: recovered while its try was in fact alive); any other
#: status means another claim took the row over, which keeps it.
SETTLEABLE = (ContactStatus.SENDING, ContactStatus.UNCERTAIN)
#: An earlier launch of a contact read from the outcomes table: (run_id, time).
EarlierLaunch = tuple[str, datetime]
#: How long after its answer was lost a request may still be processed by Altcraft: until then neither
#: reconciliation calls it not processed nor ``resend_uncertain`` (a run's or the Altcraft page's) resends it.
DEFAULT_GRACE = timedelta(minutes=10)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def grace_left(
    uncertain_since: datetime, now: datetime, grace: timedelta = DEFAULT_GRACE
) -> timedelta | None:
    """How long a contact uncertain since ``uncertain_since`` (its row's ``updated_at``, when its answer was
    lost) may still have its request processed by Altcraft at ``now``, or None once ``grace`` has passed.
    Both times are the ledger database's (:meth:`~altcraft.ledger.store.Ledger.now`): workers' clocks differ.
    The one rule of reconciliation's "not processed", of ``resend_uncertain`` and of the Altcraft page's
    resend actions."""
    left = uncertain_since + grace - now
    return left if left > timedelta(0) else None


@dataclass(frozen=True, slots=True)
class ContactState:
    """The columns of an ``altcraft_contacts`` row that the claim and recovery rules read."""

    status: str
    claim_run_key: str
    claim_try_number: int
    claimed_at: datetime
    updated_at: datetime
    last_launched_at: datetime | None = None
    last_run_key: str | None = None
    #: when the row was made (None in rows made before the column existed): where its outcomes are indexed
    created_at: datetime | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> ContactState:
        return cls(
            row["status"],
            row["claim_run_key"],
            row["claim_try_number"],
            row["claimed_at"],
            row["updated_at"],
            row["last_launched_at"],
            row["last_run_key"],
            row["created_at"],
        )


#: `ContactState`'s fields in order: the columns a claim selects (`statements.contact_states`)
STATE_COLUMNS = tuple(f.name for f in fields(ContactState))


@dataclass(frozen=True)
class Verdict:
    """A claim's decision for one contact."""

    send: bool
    reason: str = ""
    #: set when a dead ``sending`` claim is now marked uncertain (the row's new ``error_text``)
    uncertain_note: str | None = None
    #: not sent because it is uncertain (recorded as an ``uncertain`` outcome, not ``skipped``)
    uncertain: bool = False


NEVER_CLAIMED = Verdict(True)
"""The verdict of a contact that has no row yet: it is sent (see `decide`)."""


@dataclass(frozen=True)
class Launch:
    """A confirmed launch: its time, the run that sent it and the window it was for."""

    at: datetime
    run_key: str
    window_key: str | None


@dataclass(frozen=True)
class Change:
    """What a settlement, a recovery or a verdict does to a contact row.

    ``status`` None: only ``error_text`` changes (evidence noted). Otherwise the row takes ``status``,
    ``error_code`` and ``error_text`` and is stamped with the time of the change; a ``launch`` counts one
    more launch, at its time, by its run, for its window.
    """

    status: ContactStatus | None
    error_code: int | None = None
    error_text: str | None = None
    launch: Launch | None = None


# --- claims -----------------------------------------------------------------------------------------


def split_duplicates(items: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """First occurrence of each ledger key (key -> source key, input order) and the later duplicates."""
    first: dict[str, str] = {}
    duplicates: list[tuple[str, str]] = []
    for key, source_key in items:
        if not isinstance(key, str) or not key:
            raise ValueError("ledger keys must be non-empty strings")
        if key in first:
            duplicates.append((key, source_key))
        else:
            first[key] = source_key
    return first, duplicates


@dataclass
class Identities:
    """The contact row each key of a claim stands for (combined modes: found through any component; custom
    modes: under a former form of the key too)."""

    first: dict[str, str]  # key -> source key: the first key of each identity, input order
    duplicates: list[tuple[str, str]]  # items whose key or identity an earlier item took
    hashes: dict[str, str]  # key -> contact hash
    ambiguous: dict[str, str] = field(default_factory=dict)  # key -> why it cannot be sent
    new_aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # alias hash -> (contact, alias)
    rekeyed: bool = False  # some key stands for a row recorded under another key


def identities(
    scope: Scope,
    first: Mapping[str, str],
    duplicates: Sequence[tuple[str, str]],
    aliases: Mapping[str, Sequence[str]] | None,
    known: Mapping[str, str],
    former: Mapping[str, str] | None = None,
) -> Identities:
    """Resolve each key to its contact row, given ``known`` components (alias hash -> contact hash) and the
    ``former`` rows of keys (key -> the hash of its row under a `former_keys` form, for a key with no row
    of its own).

    Without ``aliases`` or ``former`` every key is its own contact. With aliases (key -> component keys,
    combined matching modes) a key with a known component is that earlier contact; a key whose components
    belong to two different contacts is ambiguous (not sent). A key whose identity an earlier key of the
    same claim took is a duplicate. Components seen for the first time are returned as ``new_aliases`` to
    record.
    """
    former = former or {}
    rows = {key: former.get(key) or scope.contact_hash(key) for key in first}
    result = Identities(dict(first), list(duplicates), rows, rekeyed=bool(aliases or former))
    if not aliases and not former:
        return result
    known = dict(known)
    taken: dict[str, str] = {}  # contact hash -> first key of this claim with that identity
    for key in list(first):
        components = (aliases or {}).get(key, ())
        hashes = {alias: scope.alias_hash(alias) for alias in components}
        found = {known[h] for h in hashes.values() if h in known}
        if len(found) > 1:
            result.ambiguous[key] = (
                f"its matching keys belong to {len(found)} different earlier contacts; not sent"
            )
            continue
        contact = found.pop() if found else result.hashes[key]
        result.hashes[key] = contact
        for alias, alias_hash in hashes.items():
            if alias_hash not in known:
                known[alias_hash] = contact
                result.new_aliases[alias_hash] = (contact, alias)
        if contact in taken:
            result.duplicates.append((key, result.first.pop(key)))
            continue
        taken[contact] = key
    return result


_CUSTOM = ("custom", "custom_sub")
"""The matching modes keyed by a custom field's value."""
FORMER_PLACES = 6
"""Most decimal places of the former forms of a custom key (`former_keys`): a decimal column's scale."""

_NUMBER_KEY = re.compile(r"(?!-0$)-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")
"""A custom key value as `altcraft.validation.number_key_text` writes a number."""


def former_keys(ledger_key: str) -> tuple[str, ...]:
    """The keys an earlier version wrote for the contact of a custom-mode ``ledger_key`` whose value is a
    number (``custom:1``), which keyed a custom value by `str()` of the value it held: a decimal column's
    digits at its scale (``custom:1.00``, up to `FORMER_PLACES` places), a float's ``1.0``, ``1e+16`` and
    ``1e-05``. A claim finds a contact under them too (`identities`), so none it launched is launched
    again; see `altcraft.validation.number_key_text`."""
    mode, _, value = ledger_key.partition(":")
    if mode not in _CUSTOM or not _NUMBER_KEY.fullmatch(value):
        return ()
    _, point, fraction = value.partition(".")
    prefix = f"{mode}:{value}{'' if point else '.'}"
    keys = [prefix + "0" * zeros for zeros in range(1, FORMER_PLACES - len(fraction) + 1)]
    as_float = float(value)
    text = str(as_float)  # 1.0 of an integral one below 10**16: among the decimal forms already
    if text != value and f"{mode}:{text}" not in keys and Decimal(repr(as_float)) == Decimal(value):
        keys.append(f"{mode}:{text}")  # a float holds the number: its str() was a key of it
    return tuple(keys)


def of_former_key(ledger_key: str) -> str:
    """The key whose `former_keys` form ``ledger_key`` is (``custom:1`` of ``custom:1.0``), or ``ledger_key``
    itself: two keys a claim may take for one row have one. Cheap for keys that are no such form."""
    mode, _, value = ledger_key.partition(":")
    if mode in _CUSTOM and ("e" in value or ("." in value and value.endswith("0"))):
        number = text_number_key(value)
        if number is not None and ledger_key in former_keys(f"{mode}:{number}"):
            return f"{mode}:{number}"
    return ledger_key


_PARTITION = re.compile(r"\[\d+\]$")


def _span(window_key: str) -> tuple[str, datetime, datetime] | None:
    """``(task, start, end)`` of a window key ``dag/task[i]/<start>/<end>`` (`RunRef.create`), the task
    without its partition's index; None for a named window (``…/events/<watermark>``) or a run key."""
    owner, *bounds = window_key.rsplit("/", 2)
    try:
        start, end = (datetime.fromisoformat(bound) for bound in bounds)
    except ValueError:
        return None
    if len(bounds) != 2 or start.tzinfo is None or end.tzinfo is None:
        return None
    return _PARTITION.sub("", owner), start, end


def window_owner(window_key: str) -> str:
    """What every window key that `same_window` may match starts with: ``dag/task`` of a time window (any
    partition's), else the key itself."""
    span = _span(window_key)
    return window_key if span is None else span[0]


def same_window(window_key: str, other: str) -> bool:
    """Whether a launch for window ``other`` was one for ``window_key``: the same key, or a window of the
    same task (any partition) over an overlapping time. A spec whose ``partitions``, schedule or
    ``lookback`` changed cuts the same time into other windows: a rerun or backfill of it launched every
    contact again under ``every_run`` and cooldowns."""
    if other == window_key:
        return True
    mine, theirs = _span(window_key), _span(other)
    if mine is None or theirs is None or mine[0] != theirs[0]:
        return False
    return mine[1] < theirs[2] and theirs[1] < mine[2]


def launch_lookup(policy: RelaunchPolicy, *, relaunch: bool) -> Literal["run", "window"] | None:
    """Which earlier launches of already-launched contacts a claim needs from the outcomes table: those by
    this run (``relaunch``), those for this window (policies ``cooldown`` and ``every_run``), or none."""
    if relaunch:
        return "run"
    return None if policy.kind == "once" else "window"


def dead_try_note(state: ContactState, run: RunRef) -> str | None:
    """The recovery rule: a row an earlier (or other) try of this same run left ``sending`` is dead, since
    one task instance runs one try at a time. Returns the row's note, None for any other row."""
    if (
        state.status != ContactStatus.SENDING
        or state.claim_run_key != run.run_key
        or state.claim_try_number == run.try_number
    ):
        return None
    return (
        f"try {state.claim_try_number} of this run claimed it at {iso(state.claimed_at)} "
        "and ended without a result"
    )


#: How old a claim still ``sending`` must be to be taken for dead: the ledger's ``stale_after`` unless given
#: (`Ledger`; the operator's and the Altcraft page's).
STALE_AFTER = timedelta(hours=6)


def stale_before(now: datetime, stale_after: timedelta) -> datetime:
    """The claim time at and before which a ``sending`` row's claim is stale at ``now``: its run ended
    without settling it (`dead_claim_note`; the scenario's standing counts such rows with it)."""
    return now - stale_after


def dead_claim_note(state: ContactState, run: RunRef, now: datetime, stale_after: timedelta) -> str | None:
    """Why a ``sending`` row's claim is dead when ``run`` meets it at ``now``: an earlier try of this same
    run made it (`dead_try_note`), or it is ``stale_after`` old (its run ended without settling it). None for
    a claim still in flight, or a row not ``sending``."""
    if state.status != ContactStatus.SENDING:
        return None
    note = dead_try_note(state, run)
    if note is None and state.claimed_at <= stale_before(now, stale_after):
        note = f"claim by run {state.claim_run_key} at {iso(state.claimed_at)} was never settled"
    return note


def uncertain_with(note: str | None) -> Change | None:
    """A dead claim's row becoming uncertain with its ``note`` (None: no change)."""
    return None if note is None else Change(ContactStatus.UNCERTAIN, error_text=note)


def recovery(state: ContactState, run: RunRef) -> Change | None:
    """What recovery does to a row: a dead claim of this run becomes uncertain with its note."""
    return uncertain_with(dead_try_note(state, run))


def expiry(state: ContactState, run: RunRef, now: datetime, stale_after: timedelta) -> Change | None:
    """What meeting a row before a claim does to it (`dead_claim_note`): a dead claim becomes uncertain
    now, as the claim would make it, so that reconciliation reads its evidence before the claim decides."""
    return uncertain_with(dead_claim_note(state, run, now, stale_after))


#: Why an uncertain contact that a run did not look up (its ``reconcile_max_lookups`` reached) is not resent.
NOT_RECONCILED = (
    "not reconciled by this run (its reconcile_max_lookups was reached), so not resent: a later run "
    "reconciles it"
)

#: How the reason of an uncertain contact that ``resend_uncertain`` did not resend within the grace starts.
IN_GRACE = "not resent within the reconciliation grace: "


IN_FLIGHT = "in flight in "
"""How the skip reason of a contact claimed by a live claim starts (see `decide`)."""


def in_flight_elsewhere(reason: str) -> bool:
    """Whether a skip reason says another run still has the contact in flight: its outcome is not known
    yet (that run may still fail to launch it)."""
    return reason.startswith(f"{IN_FLIGHT}run ")


def decide(
    state: ContactState | None,
    earlier: EarlierLaunch | None,
    run: RunRef,
    policy: RelaunchPolicy,
    *,
    relaunch: bool,
    resend_uncertain: bool,
    now: datetime,
    stale_after: timedelta,
    grace: timedelta = DEFAULT_GRACE,
    held: bool = False,
) -> Verdict:
    """Send or skip one contact, given its row (None: never claimed) and ``earlier``: its launch by this
    run (``relaunch``) or for this window (otherwise), as read per :func:`launch_lookup`.

    ``resend_uncertain`` resends an uncertain contact of another run only once ``grace`` has passed since
    it became uncertain (:func:`grace_left`), and never one ``held`` (the run did not reconcile it: its
    ``reconcile_max_lookups`` was reached); a dead claim found now became uncertain now."""
    if state is None:
        return NEVER_CLAIMED
    status, by, since = state.status, state.claim_run_key, state.updated_at
    note = None
    if status == ContactStatus.SENDING:
        note = dead_claim_note(state, run, now, stale_after)
        if note is None:
            where = "this run (another batch)" if by == run.run_key else f"run {by}"
            return Verdict(False, f"{IN_FLIGHT}{where} since {iso(state.claimed_at)}")
        status, since = ContactStatus.UNCERTAIN, now
    if status == ContactStatus.UNCERTAIN and (not resend_uncertain or held or by == run.run_key):
        if by == run.run_key:
            hint = "this run never resends its own"
        elif held:
            hint = NOT_RECONCILED
        else:
            hint = "resend with resend_uncertain=True"
        return Verdict(False, f"uncertain since {iso(since)} (run {by}); {hint}", note, uncertain=True)
    left = grace_left(since, now, grace) if status == ContactStatus.UNCERTAIN else None
    if left is not None:
        return Verdict(False, _in_grace(since, by, grace), note, uncertain=True)
    reason = policy_reason(state, earlier, policy, relaunch=relaunch, now=now)
    return Verdict(reason is None, reason or "", note)


def _in_grace(since: datetime, by: str, grace: timedelta) -> str:
    return (
        f"{IN_GRACE}uncertain since {iso(since)} (run {by}), less than {grace.total_seconds():.0f} s ago: "
        f"Altcraft may still be processing its request; reconcile, or resend from {iso(since + grace)}"
    )


def policy_reason(
    state: ContactState,
    earlier: EarlierLaunch | None,
    policy: RelaunchPolicy,
    *,
    relaunch: bool,
    now: datetime,
) -> str | None:
    """Why a contact that was launched before must not be launched now, or None."""
    launched_at = state.last_launched_at
    if launched_at is None and state.status == ContactStatus.LAUNCHED:  # set by hand without a time
        launched_at = state.updated_at
    if launched_at is None:
        return None
    if relaunch:
        return f"already launched by this run at {iso(earlier[1])}" if earlier else None
    if policy.kind == "once":
        by = f" by {state.last_run_key}" if state.last_run_key else ""
        return f"already launched at {iso(launched_at)}{by} (policy once)"
    if earlier:
        return f"already launched for this window at {iso(earlier[1])} by run {earlier[0]}"
    if policy.cooldown is not None and launched_at > now - policy.cooldown:
        return f"launched at {iso(launched_at)}, within {policy}"
    return None


# --- settlements and verdicts -----------------------------------------------------------------------


def final_settlements(claim: Claim, settlements: Mapping[str, Settlement]) -> dict[str, Settlement]:
    """The settlement of every key of a sent claim: a key without an answer is uncertain (it may have been
    sent). A claim is settled once, and only for its own keys."""
    if claim.settled:
        raise ValueError(f"claim {claim.batch_id} was already settled")
    unknown = settlements.keys() - set(claim.to_send)
    if unknown:
        raise ValueError(f"{len(unknown)} settlement(s) for keys that are not in claim {claim.batch_id}")
    return {key: settlements.get(key, NO_ANSWER) for key in claim.to_send}


def settled(settlement: Settlement, run: RunRef, at: datetime) -> Change:
    """What Altcraft's answer does to the row: launched now by ``run``, or failed/uncertain with the error."""
    if settlement.outcome is Outcome.LAUNCHED:
        return Change(ContactStatus.LAUNCHED, launch=Launch(at, run.run_key, run.window_key))
    return Change(ContactStatus(settlement.outcome.value), settlement.code, settlement.text)


def resolved(contact: UncertainContact, resolution: Resolution, window_key: str | None) -> Change:
    """What a reconciliation verdict does to an uncertain row.

    ``launched``: a launch at its claim time, by the run that sent it, for ``window_key`` (that of the
    sending try's uncertain outcome); ``failed``: not processed, so the next claim sends it; ``uncertain``:
    the evidence is noted, nothing else changes.
    """
    if resolution.outcome is Outcome.LAUNCHED:
        launch = Launch(contact.claimed_at, contact.claim_run_key, window_key)
        return Change(ContactStatus.LAUNCHED, error_text=resolution.reason, launch=launch)
    if resolution.outcome is Outcome.FAILED:
        return Change(ContactStatus.FAILED, error_text=resolution.reason)
    return Change(None, error_text=resolution.reason)
