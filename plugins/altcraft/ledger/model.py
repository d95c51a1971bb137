"""The ledger's vocabulary: scopes, runs, outcomes, claims, settlements and verdicts (no SQL, no Airflow)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

ID_LEN = 250  # Airflow's length of dag_id, task_id and run_id
KEY_LEN = 800  # run keys and window keys: three ids, or two ids and two timestamps
PLATFORM_LEN = 255
MARKER_LEN = 300  # "FIELD=value" of the launch marker
MODE_LEN = 16  # a DeliveryMode value


class Outcome(StrEnum):
    """What happened to one contact in one task try."""

    LAUNCHED = "launched"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


class ContactStatus(StrEnum):
    """State of a contact in ``altcraft_contacts``."""

    LAUNCHED = "launched"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    SENDING = "sending"


#: The outcomes of a contact that was sent: settled from Altcraft's answer or by reconciliation.
SETTLED = (Outcome.LAUNCHED, Outcome.FAILED, Outcome.UNCERTAIN)

_MAP_INDEX = re.compile(r"\[\d+\]$")  # a mapped task instance's ``[map_index]`` (`RunRef.create`)


def utc(moment: datetime | None) -> datetime:
    """``moment`` (now if None) in UTC; naive datetimes are refused rather than guessed."""
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("datetimes given to the ledger must be timezone-aware")
    return moment.astimezone(UTC)


# A datetime made anew, not by ``replace``: CPython 3.11's ``replace`` costs 1.0 us against 0.4 us, and a
# claim converts four times per returning contact.


def naive_utc(moment: datetime) -> datetime:
    """An aware ``moment`` as the naive UTC datetime the ledger stores (see `utc`)."""
    if moment.tzinfo is not UTC:
        moment = utc(moment)
    return datetime(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond
    )


def aware_utc(stored: datetime) -> datetime:
    """A naive UTC datetime as the ledger stores it, made aware."""
    return datetime(
        stored.year,
        stored.month,
        stored.day,
        stored.hour,
        stored.minute,
        stored.second,
        stored.microsecond,
        UTC,
    )


def normalise_platform(url: str) -> str:
    """Canonical form of an Altcraft base URL: lower-case scheme and host, no trailing slash.

    Credentials, a query or a fragment are refused (they could carry the API token into the ledger).
    The URL itself is never echoed in the error.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("platform must be an http(s) URL with a host")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError("platform URL must not contain credentials, a query or a fragment")
    platform = f"{scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
    if len(platform) > PLATFORM_LEN:
        raise ValueError(f"platform URL longer than {PLATFORM_LEN} characters")
    return platform


#: Contact hashes a `Scope` keeps (`Scope.contact_hash`): a chunk of the default 1,000 contacts is hashed
#: by the read before its claim, then by the claim. A larger chunk's are partly hashed twice, as they were.
_RECENT_HASHES = 4096


@dataclass(frozen=True)
class Scope:
    """What exactly-once is about: one scenario on one Altcraft platform. ``platform`` is normalised."""

    platform: str
    scenario_id: int
    #: ``platform \\n scenario_id \\n``, the start of every contact hash's text (formatted once, not per key)
    _hashed_prefix: str = field(init=False, repr=False, compare=False)
    #: the hashes of the latest keys (`contact_hash`), at most `_RECENT_HASHES`: a pure function's results,
    #: so threads may share it; a chunk's keys are hashed by `Ledger.to_reconcile` and again by its claim
    _recent: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "platform", normalise_platform(self.platform))
        if (
            isinstance(self.scenario_id, bool)
            or not isinstance(self.scenario_id, int)
            or self.scenario_id < 0
        ):
            raise ValueError("scenario_id must be a non-negative integer")
        object.__setattr__(self, "_hashed_prefix", f"{self.platform}\n{self.scenario_id}\n")

    def contact_hash(self, contact_key: str) -> str:
        """Primary key of a contact row: sha256 hex of ``platform \\n scenario_id \\n contact_key``. Kept
        for the next call (`_recent`): the read and the claim of 1,000 new contacts on PostgreSQL took 0.4 us
        of CPU less per contact (median over 8 interleaved pairs of runs, 7 of them less)."""
        recent = self._recent
        found = recent.get(contact_key)
        if found is None:
            if len(recent) >= _RECENT_HASHES:
                recent.clear()
            found = recent[contact_key] = hashlib.sha256(
                f"{self._hashed_prefix}{contact_key}".encode()
            ).hexdigest()
        return found

    def alias_hash(self, alias: str) -> str:
        """Primary key of a combined-mode component row (``altcraft_aliases``)."""
        return self.contact_hash(f"alias\n{alias}")

    def identity_hash(self, pipeline: str) -> str:
        """Primary key of a pipeline's row of ``altcraft_identities`` (how it keys the scope's contacts):
        ``pipeline`` is `RunRef.pipeline`."""
        return self.contact_hash(f"identity\n{pipeline}")


class IdentityChanged(ValueError):
    """A try would key its contacts otherwise than its pipeline keyed the scope's contacts before
    (``altcraft_identities``): every contact the pipeline launched before would be unknown under the new
    keys, and launched again when read again."""

    def __init__(self, scope: Scope, pipeline: str, recorded: str, identity: str, since: str) -> None:
        self.scope, self.pipeline, self.recorded, self.identity = scope, pipeline, recorded, identity
        super().__init__(
            f"mapping.matching: pipeline {pipeline} launched into scenario {scope.scenario_id} on "
            f"{scope.platform} matching {recorded!r} (since run {since}); this task matches {identity!r}, "
            f"under which none of the contacts it launched is known, so each one read again (a rerun, a "
            f"backfill, a lookback, a retry) would be launched a second time. Nothing was sent. Match by "
            f"{recorded!r} again (mapping.matching and mapping.field_name), or launch into another scenario; "
            "to switch for good once no contact launched before will be read again, see "
            "docs/ledger.md#changing-how-contacts-are-matched"
        )


class PositionLocked(RuntimeError):
    """Another run of the pipeline held the lock of its stored position (`Ledger.position_lock`) for the
    whole wait: this run's position was not committed."""

    def __init__(self, name: str, wait: float) -> None:
        self.name, self.wait = name, wait
        super().__init__(
            f"could not take the lock of the stored position of {name} within {wait:g}s: another run of "
            "the pipeline was committing its position (or, on a SQLite ledger, another write held the "
            "database) all that time. The position did not move"
        )


@dataclass(frozen=True)
class RunRef:
    """Who is sending: one try of one task instance, and the data window it processes."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    window_key: str

    def __post_init__(self) -> None:
        if any(not value or len(value) > ID_LEN for value in (self.dag_id, self.task_id, self.run_id)):
            raise ValueError(f"dag_id, task_id and run_id must be 1..{ID_LEN} characters")
        if not self.window_key or len(self.window_key) > KEY_LEN:
            raise ValueError(f"window_key must be 1..{KEY_LEN} characters")

    @property
    def run_key(self) -> str:
        return f"{self.dag_id}/{self.task_id}/{self.run_id}"

    @property
    def pipeline(self) -> str:
        """The pipeline part of the run key, ``dag_id/task_id``; a mapped task's index (``task[2]``, a
        partition) left out, since its instances share one mapping."""
        return f"{self.dag_id}/{_MAP_INDEX.sub('', self.task_id)}"

    @classmethod
    def create(
        cls,
        dag_id: str,
        task_id: str,
        run_id: str,
        try_number: int,
        window: tuple[datetime, datetime] | None = None,
        *,
        map_index: int | None = None,
        window_name: str | None = None,
    ) -> RunRef:
        """A run reference whose window key is ``dag/task/<window_name>`` if named, else
        ``dag/task/<start UTC iso>/<end UTC iso>``, or the run key.

        A mapped task instance (``map_index`` ≥ 0) is told apart as ``task_id[map_index]``.
        """
        if map_index is not None and map_index >= 0:
            task_id = f"{task_id}[{map_index}]"
        if window_name:
            key = f"{dag_id}/{task_id}/{window_name}"
        elif window is None:
            key = f"{dag_id}/{task_id}/{run_id}"
        else:
            start, end = (utc(moment).isoformat() for moment in window)
            key = f"{dag_id}/{task_id}/{start}/{end}"
        return cls(dag_id, task_id, run_id, try_number, key)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The answer for one contact of a sent batch: launched, failed (certainly not launched) or uncertain."""

    outcome: Outcome
    code: int | None = None
    text: str | None = None
    profile_id: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in SETTLED:
            raise ValueError("a settlement is launched, failed or uncertain")


@dataclass
class Claim:
    """Result of :meth:`Ledger.claim`.

    ``to_send`` keys are committed as ``sending``: send exactly one profile per key (the first item with
    that key) and pass this object to :meth:`Ledger.settle`. ``skipped`` maps the other keys to the
    reason; their ``skipped`` outcomes (and one per duplicate item) are already recorded.
    """

    batch_id: str
    to_send: list[str]
    skipped: dict[str, str]
    source_keys: dict[str, str] = field(default_factory=dict)  # to_send key -> source key
    settled: bool = False
    #: keys not sent because they are uncertain (not in ``skipped``; recorded as ``uncertain``)
    uncertain: dict[str, str] = field(default_factory=dict)
    #: the task try that made the claim (:meth:`Ledger.claim_of`), when it is not the caller's
    try_number: int | None = None
    #: skipped items beyond the first of each key or identity (duplicates in this claim)
    duplicates: int = 0
    #: contact row of each key (its own hash, or an earlier contact's for a combined-mode identity)
    hashes: dict[str, str] = field(default_factory=dict)
    #: the ``created_at`` of each ``to_send`` key's row (its outcomes carry it; None if the row has none)
    origins: dict[str, datetime | None] = field(default_factory=dict)

    def contact_hash(self, scope: Scope, key: str) -> str:
        return self.hashes.get(key) or scope.contact_hash(key)


@dataclass(frozen=True)
class UncertainContact:
    """An ``uncertain`` contact row, with what reconciliation needs to decide it."""

    contact_key: str
    contact_hash: str
    launch_marker: str | None
    claimed_at: datetime
    claim_run_key: str
    #: the try of that run that made the claim (its outcomes are that try's)
    claim_try_number: int
    batch_id: str
    #: how the latest claim's request was sent (a ``DeliveryMode`` value); None when not recorded (claimed
    #: by a version before ``delivery_mode``), which reconciliation reads as possibly queued
    delivery_mode: str | None
    #: when the row became uncertain (its ``updated_at``): when the request's answer was lost, at or after
    #: its send (the claim may be older: one request per contact sends a chunk's contacts one by one)
    uncertain_since: datetime
    #: when the row was made (None if made before the column existed): where its outcomes are indexed
    created_at: datetime | None = None
    #: when a reconciliation last checked it (None: none has, or not since the column existed)
    checked_at: datetime | None = None

    @property
    def turn(self) -> datetime:
        """When it last had its turn: became uncertain, or was checked since. A bounded reconciliation
        checks the earliest first, so one checked and left undecided goes behind those waiting longer."""
        return self.uncertain_since if self.checked_at is None else max(self.checked_at, self.uncertain_since)


@dataclass(frozen=True)
class SentTask:
    """The Altcraft task an ``async`` claim's request created (``altcraft_tasks``): its id, and the ledger
    keys it was sent, in request order (its per-contact results are positional). ``shared``: Altcraft
    answered its id for another request too, so its result may be that request's and proves nothing."""

    task_id: str
    keys: tuple[str, ...]
    shared: bool = False


@dataclass(frozen=True)
class Resolution:
    """A reconciliation verdict for one uncertain contact: launched, failed (not processed) or uncertain."""

    outcome: Outcome
    reason: str
    profile_id: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in SETTLED:
            raise ValueError("a resolution is launched, failed or uncertain")


@dataclass(frozen=True)
class ContactHistory:
    """A contact's ledger row (None if never claimed) and its outcomes, oldest first."""

    contact: dict[str, Any] | None
    outcomes: list[dict[str, Any]]
