"""The exactly-once rules (altcraft.ledger.rules), table-driven, without a database.

tests/ledger/test_store.py checks the same rules through the store on every backend; these tables name each
case of a rule once.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from altcraft.ledger import Claim, Outcome, RelaunchPolicy, Resolution, RunRef, Scope, Settlement
from altcraft.ledger.model import ContactStatus, UncertainContact
from altcraft.ledger.rules import (
    IN_GRACE,
    NEVER_CLAIMED,
    NO_ANSWER,
    NOT_RECONCILED,
    Change,
    ContactState,
    Launch,
    dead_try_note,
    decide,
    final_settlements,
    identities,
    launch_lookup,
    of_former_key,
    recovery,
    resolved,
    same_window,
    settled,
    split_duplicates,
    window_owner,
)

NOW = datetime(2030, 1, 2, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
RUN = RunRef("d", "t", "r2", 2, "w2")  # run key d/t/r2, try 2
THIS_RUN = RUN.run_key
OTHER_RUN = "d/t/r1"
ONCE = RelaunchPolicy.parse("once")
EVERY_RUN = RelaunchPolicy.parse("every_run")
COOLDOWN = RelaunchPolicy.parse("cooldown:1d")
SCOPE = Scope("https://x.altcraft.test", 7)


def state(
    status: str,
    *,
    by: str = OTHER_RUN,
    try_number: int = 1,
    claimed: timedelta = HOUR,
    launched: timedelta | None = None,
    last_run: str | None = None,
) -> ContactState:
    """A contact row claimed ``claimed`` ago (and updated then), launched ``launched`` ago if given."""
    return ContactState(
        status,
        by,
        try_number,
        NOW - claimed,
        NOW - claimed,
        None if launched is None else NOW - launched,
        last_run,
    )


def at(delta: timedelta) -> str:
    return (NOW - delta).isoformat(timespec="seconds")


# (case, row, earlier launch, policy, relaunch, resend_uncertain) -> (send, reason, note, uncertain)
DECISIONS = [
    ("never claimed", None, None, ONCE, False, False, (True, "", None, False)),
    (
        "in flight in another run",
        state("sending"),
        None,
        ONCE,
        False,
        False,
        (False, f"in flight in run {OTHER_RUN} since {at(HOUR)}", None, False),
    ),
    (
        "in flight in another batch of this try",
        state("sending", by=THIS_RUN, try_number=2),
        None,
        ONCE,
        False,
        False,
        (False, f"in flight in this run (another batch) since {at(HOUR)}", None, False),
    ),
    (
        "left sending by an earlier try of this run: uncertain, never resent by this run",
        state("sending", by=THIS_RUN, try_number=1),
        None,
        ONCE,
        False,
        True,
        (
            False,
            f"uncertain since {at(timedelta(0))} (run {THIS_RUN}); this run never resends its own",
            f"try 1 of this run claimed it at {at(HOUR)} and ended without a result",
            True,
        ),
    ),
    (
        "a stale claim of another run becomes uncertain",
        state("sending", claimed=7 * HOUR),
        None,
        ONCE,
        False,
        False,
        (
            False,
            f"uncertain since {at(timedelta(0))} (run {OTHER_RUN}); resend with resend_uncertain=True",
            f"claim by run {OTHER_RUN} at {at(7 * HOUR)} was never settled",
            True,
        ),
    ),
    (
        "a stale claim of another run, resend_uncertain: uncertain from now, so not resent within the grace",
        state("sending", claimed=7 * HOUR),
        None,
        ONCE,
        False,
        True,
        (
            False,
            f"{IN_GRACE}uncertain since {at(timedelta(0))} (run {OTHER_RUN}), less than 600 s ago: Altcraft "
            f"may still be processing its request; reconcile, or resend from {at(-10 * MINUTE)}",
            f"claim by run {OTHER_RUN} at {at(7 * HOUR)} was never settled",
            True,
        ),
    ),
    (
        "uncertain from another run 9 minutes ago, resend_uncertain: not resent within the grace",
        state("uncertain", claimed=9 * MINUTE),
        None,
        ONCE,
        False,
        True,
        (
            False,
            f"{IN_GRACE}uncertain since {at(9 * MINUTE)} (run {OTHER_RUN}), less than 600 s ago: Altcraft "
            f"may still be processing its request; reconcile, or resend from {at(-MINUTE)}",
            None,
            True,
        ),
    ),
    (
        "uncertain from another run 10 minutes ago, resend_uncertain: the grace has passed, resent",
        state("uncertain", claimed=10 * MINUTE),
        None,
        ONCE,
        False,
        True,
        (True, "", None, False),
    ),
    (
        "uncertain from another run",
        state("uncertain"),
        None,
        EVERY_RUN,
        False,
        False,
        (
            False,
            f"uncertain since {at(HOUR)} (run {OTHER_RUN}); resend with resend_uncertain=True",
            None,
            True,
        ),
    ),
    (
        "uncertain from another run, resend_uncertain, launched before: the policy still applies",
        state("uncertain", launched=2 * HOUR, last_run=OTHER_RUN),
        None,
        ONCE,
        False,
        True,
        (False, f"already launched at {at(2 * HOUR)} by {OTHER_RUN} (policy once)", None, False),
    ),
    (
        "uncertain from this run, resend_uncertain: this run never resends its own",
        state("uncertain", by=THIS_RUN),
        None,
        ONCE,
        False,
        True,
        (
            False,
            f"uncertain since {at(HOUR)} (run {THIS_RUN}); this run never resends its own",
            None,
            True,
        ),
    ),
    (
        "failed, never launched: sent again",
        state("failed"),
        None,
        ONCE,
        False,
        False,
        (True, "", None, False),
    ),
    (
        "failed relaunch of a launched contact, policy once: skipped",
        state("failed", launched=3 * HOUR),
        None,
        ONCE,
        False,
        False,
        (False, f"already launched at {at(3 * HOUR)} (policy once)", None, False),
    ),
    (
        "launched by hand without a time: its update time counts",
        state("launched", claimed=5 * HOUR),
        None,
        ONCE,
        False,
        False,
        (False, f"already launched at {at(5 * HOUR)} (policy once)", None, False),
    ),
    (
        "every_run, launched for another window",
        state("launched", launched=HOUR),
        None,
        EVERY_RUN,
        False,
        False,
        (True, "", None, False),
    ),
    (
        "every_run, launched for this window",
        state("launched", launched=HOUR),
        ("r0", NOW - 30 * HOUR),
        EVERY_RUN,
        False,
        False,
        (False, f"already launched for this window at {at(30 * HOUR)} by run r0", None, False),
    ),
    (
        "cooldown, within it",
        state("launched", launched=23 * HOUR),
        None,
        COOLDOWN,
        False,
        False,
        (False, f"launched at {at(23 * HOUR)}, within cooldown:1d", None, False),
    ),
    (
        "cooldown, past it",
        state("launched", launched=25 * HOUR),
        None,
        COOLDOWN,
        False,
        False,
        (True, "", None, False),
    ),
    (
        "relaunch, not yet by this run: sent even with policy once",
        state("launched", launched=HOUR),
        None,
        ONCE,
        True,
        False,
        (True, "", None, False),
    ),
    (
        "relaunch, already by this run",
        state("launched", launched=HOUR),
        ("r2", NOW - HOUR),
        ONCE,
        True,
        False,
        (False, f"already launched by this run at {at(HOUR)}", None, False),
    ),
]


@pytest.mark.parametrize(
    ("row", "earlier", "policy", "relaunch", "resend", "expected"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_what_a_claim_decides_for_one_contact(row, earlier, policy, relaunch, resend, expected):
    verdict = decide(
        row,
        earlier,
        RUN,
        policy,
        relaunch=relaunch,
        resend_uncertain=resend,
        now=NOW,
        stale_after=6 * HOUR,
    )
    assert (verdict.send, verdict.reason, verdict.uncertain_note, verdict.uncertain) == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            state("uncertain", claimed=HOUR),
            (False, f"uncertain since {at(HOUR)} (run {OTHER_RUN}); {NOT_RECONCILED}"),
        ),
        (state("launched", launched=HOUR), (False, f"already launched at {at(HOUR)} (policy once)")),
    ],
    ids=["uncertain", "launched"],
)
def test_resend_uncertain_never_resends_a_contact_held_unreconciled(row, expected):
    """A contact the try did not look up (its reconcile_max_lookups reached) is held: not resent, though
    the grace has passed; the rules for every other row are unchanged."""
    verdict = decide(
        row, None, RUN, ONCE, relaunch=False, resend_uncertain=True, held=True, now=NOW, stale_after=6 * HOUR
    )
    assert (verdict.send, verdict.reason) == expected


def test_contact_and_alias_hashes_are_the_stored_keys():
    """The primary keys of every stored row: sha256 hex of ``platform \\n scenario_id \\n key``."""
    assert SCOPE.contact_hash("email:ünï@example.org") == (
        "abf0b3a6e25b2b3ab86dd3d84abca4f8f43dacae97ce568e9d7276fa2501a4a6"
    )
    assert SCOPE.alias_hash("phone:+79001234567") == (
        "b332127c90e6c029b25f66ff694376d8ae375fc39bdd9345f345338421ae8db2"
    )


@given(st.text(st.characters(exclude_categories=())), st.integers(min_value=0, max_value=2**63))
def test_contact_hash_is_the_documented_formula(key, scenario_id):
    scope = Scope("https://x.altcraft.test", scenario_id)
    text = f"https://x.altcraft.test\n{scenario_id}\n{key}"
    try:
        expected = hashlib.sha256(text.encode()).hexdigest()
    except UnicodeEncodeError as error:  # a lone surrogate: the same error, at the same position
        with pytest.raises(UnicodeEncodeError) as raised:
            scope.contact_hash(key)
        assert str(raised.value) == str(error)
        return
    assert scope.contact_hash(key) == expected


@pytest.mark.parametrize("policy", [ONCE, COOLDOWN, EVERY_RUN])
@pytest.mark.parametrize(("relaunch", "resend"), [(False, False), (True, False), (False, True)])
def test_a_contact_without_a_row_gets_the_verdict_the_store_takes_without_asking(policy, relaunch, resend):
    """The store gives a contact without a row `NEVER_CLAIMED` without calling `decide` (most contacts of a
    chunk): that must be what `decide` says for it, whatever the policy and flags."""
    verdict = decide(
        None, None, RUN, policy, relaunch=relaunch, resend_uncertain=resend, now=NOW, stale_after=6 * HOUR
    )
    assert verdict is NEVER_CLAIMED
    assert (NEVER_CLAIMED.send, NEVER_CLAIMED.reason, NEVER_CLAIMED.uncertain_note) == (True, "", None)
    assert not NEVER_CLAIMED.uncertain


@pytest.mark.parametrize(
    ("policy", "relaunch", "lookup"),
    [(ONCE, False, None), (COOLDOWN, False, "window"), (EVERY_RUN, False, "window"), (ONCE, True, "run")],
)
def test_which_earlier_launches_a_claim_reads(policy, relaunch, lookup):
    assert launch_lookup(policy, relaunch=relaunch) == lookup


RECOVERY = [
    ("an earlier try of this run left it sending", state("sending", by=THIS_RUN, try_number=1), True),
    ("a later try of this run (a zombie) left it sending", state("sending", by=THIS_RUN, try_number=3), True),
    ("this very try is sending it", state("sending", by=THIS_RUN, try_number=2), False),
    ("another run is sending it", state("sending"), False),
    ("settled by an earlier try", state("uncertain", by=THIS_RUN, try_number=1), False),
]


@pytest.mark.parametrize(("row", "dead"), [c[1:] for c in RECOVERY], ids=[c[0] for c in RECOVERY])
def test_recovery_turns_only_dead_claims_of_this_run_uncertain(row, dead):
    change = recovery(row, RUN)
    assert (change is not None) is dead
    assert (dead_try_note(row, RUN) is not None) is dead
    if dead:
        note = f"try {row.claim_try_number} of this run claimed it at {at(HOUR)} and ended without a result"
        assert change == Change(ContactStatus.UNCERTAIN, error_text=note)


def test_a_key_without_an_answer_settles_uncertain():
    claim = Claim("b1", ["k:a", "k:b"], {})
    launched = Settlement(Outcome.LAUNCHED, profile_id="p")
    assert final_settlements(claim, {"k:a": launched}) == {"k:a": launched, "k:b": NO_ANSWER}


@pytest.mark.parametrize(
    ("claim", "settlements", "error"),
    [
        (Claim("b1", ["k:a"], {}, settled=True), {}, "already settled"),
        (
            Claim("b1", ["k:a"], {}),
            {"k:x": NO_ANSWER},
            "1 settlement\\(s\\) for keys that are not in claim b1",
        ),
    ],
    ids=["settled twice", "a key of another claim"],
)
def test_a_claim_settles_once_and_only_its_own_keys(claim, settlements, error):
    with pytest.raises(ValueError, match=error):
        final_settlements(claim, settlements)


@pytest.mark.parametrize(
    ("settlement", "change"),
    [
        (
            Settlement(Outcome.LAUNCHED, profile_id="p"),
            Change(ContactStatus.LAUNCHED, launch=Launch(NOW, THIS_RUN, "w2")),
        ),
        (
            Settlement(Outcome.FAILED, code=400, text="bad email"),
            Change(ContactStatus.FAILED, 400, "bad email"),
        ),
        (Settlement(Outcome.UNCERTAIN, text="timeout"), Change(ContactStatus.UNCERTAIN, None, "timeout")),
    ],
    ids=["launched", "failed", "uncertain"],
)
def test_what_a_settlement_does_to_the_row(settlement, change):
    assert settled(settlement, RUN, NOW) == change


CONTACT = UncertainContact("k:a", "h", "AF_SYNC=1", NOW - HOUR, OTHER_RUN, 1, "b1", "batch", NOW - HOUR)


@pytest.mark.parametrize(
    ("resolution", "change"),
    [
        (
            Resolution(Outcome.LAUNCHED, "marker found"),
            Change(
                ContactStatus.LAUNCHED, error_text="marker found", launch=Launch(NOW - HOUR, OTHER_RUN, "w1")
            ),
        ),
        (Resolution(Outcome.FAILED, "no profile"), Change(ContactStatus.FAILED, error_text="no profile")),
        (Resolution(Outcome.UNCERTAIN, "no marker"), Change(None, error_text="no marker")),
    ],
    ids=["launched at its claim, by the run that sent it", "not processed", "evidence noted only"],
)
def test_what_a_reconciliation_verdict_does_to_the_row(resolution, change):
    assert resolved(CONTACT, resolution, "w1") == change


def test_duplicate_keys_after_the_first_are_set_apart():
    assert split_duplicates([("k:a", "1"), ("k:b", "2"), ("k:a", "3")]) == (
        {"k:a": "1", "k:b": "2"},
        [("k:a", "3")],
    )
    with pytest.raises(ValueError, match="non-empty strings"):
        split_duplicates([("", "1")])


E, P, E2, P2 = "email:a@x.org", "phone:+79001234567", "email:b@x.org", "phone:+79007654321"
ALIASES = {f"{E}|{P}": (E, P), E: (E,), P: (P,), E2: (E2,), f"{E2}|{P}": (E2, P), f"{E}|{P2}": (E, P2)}


def known(**contacts: str) -> dict[str, str]:
    """Recorded components: alias key -> contact hash."""
    return {SCOPE.alias_hash(alias): contact for alias, contact in contacts.items()}


IDENTITIES = [
    (
        "no aliases: each key its own contact",
        [E, E2],
        None,
        {},
        {E: SCOPE.contact_hash(E), E2: SCOPE.contact_hash(E2)},
        [],
        [],
    ),
    ("a known component is that earlier contact", [P], ALIASES, known(**{P: "c1"}), {P: "c1"}, [], []),
    (
        "components of two earlier contacts: ambiguous",
        [f"{E2}|{P}"],
        ALIASES,
        known(**{E2: "c1", P: "c2"}),
        {},
        [],
        [f"{E2}|{P}"],
    ),
    (
        "the same person twice in one claim: a duplicate",
        [f"{E}|{P}", P],
        ALIASES,
        {},
        {f"{E}|{P}": SCOPE.contact_hash(f"{E}|{P}")},
        [P],
        [],
    ),
]


@pytest.mark.parametrize(
    ("keys", "aliases", "recorded", "contacts", "duplicates", "ambiguous"),
    [c[1:] for c in IDENTITIES],
    ids=[c[0] for c in IDENTITIES],
)
def test_combined_mode_keys_resolve_to_one_identity(keys, aliases, recorded, contacts, duplicates, ambiguous):
    first = {key: f"row-{n}" for n, key in enumerate(keys)}
    ids = identities(SCOPE, first, [], aliases, recorded)
    assert {k: ids.hashes[k] for k in ids.first if k not in ids.ambiguous} == contacts
    assert [key for key, _ in ids.duplicates] == duplicates
    assert list(ids.ambiguous) == ambiguous


def test_new_components_are_returned_for_recording_and_known_ones_are_not():
    ids = identities(SCOPE, {f"{E}|{P2}": "row-1"}, [], ALIASES, known(**{E: "c1"}))
    assert ids.hashes == {f"{E}|{P2}": "c1"}
    assert ids.new_aliases == {SCOPE.alias_hash(P2): ("c1", P2)}


DAY = "dag/import_and_launch[0]/2026-03-01T00:00:00+00:00/2026-03-02T00:00:00+00:00"


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (DAY, True),
        ("dag/import_and_launch[2]/2026-03-01T16:00:00+00:00/2026-03-02T00:00:00+00:00", True),  # partition
        ("dag/import_and_launch/2026-03-01T06:00:00+00:00/2026-03-01T12:00:00+00:00", True),  # schedule
        ("dag/import_and_launch[0]/2026-03-01T23:45:00+00:00/2026-03-02T01:00:00+00:00", True),  # lookback
        ("dag/import_and_launch[0]/2026-03-02T00:00:00+00:00/2026-03-03T00:00:00+00:00", False),  # the next
        ("dag/import_and_launch[0]/2026-02-28T00:00:00+00:00/2026-03-01T00:00:00+00:00", False),  # before
        ("other/import_and_launch[0]/2026-03-01T00:00:00+00:00/2026-03-02T00:00:00+00:00", False),
        ("dag/import_and_launch_v2/2026-03-01T00:00:00+00:00/2026-03-02T00:00:00+00:00", False),
        ("dag/import_and_launch/events/2026-03-01T00:00:00+00:00", False),
        ("dag/import_and_launch/manual__2026-03-01T00:00:00+00:00", False),
    ],
)
def test_a_launch_for_an_overlapping_window_of_the_same_task_counts_as_one_for_this_window(other, same):
    """A spec's partitions, schedule or lookback changed cut the same time into windows of other keys: a
    rerun of a window launched its contacts again under every_run and cooldowns."""
    assert same_window(DAY, other) is same
    assert same_window(other, DAY) is same
    assert other.startswith(window_owner(DAY)) or not same


def test_named_windows_and_run_keys_are_the_same_window_only_as_the_same_key():
    for key in ("dag/send/events/2026-03-01T00:00:00+00:00", "dag/send/manual__2026-03-01"):
        assert same_window(key, key) and window_owner(key) == key
        assert not same_window(key, DAY)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("custom:1.0", "custom:1"),
        ("custom:1.00", "custom:1"),
        ("custom_sub:1.500", "custom_sub:1.5"),
        ("custom:1e+16", "custom:10000000000000000"),
        ("custom:1e-05", "custom:0.00001"),
        ("custom:1", "custom:1"),
        ("custom:1.5", "custom:1.5"),
        ("custom:1.0000000", "custom:1.0000000"),  # more places than a former form has
        ("custom:abe", "custom:abe"),
        ("custom:-0.0", "custom:-0.0"),
        ("email:a@b.e0", "email:a@b.e0"),
    ],
)
def test_of_former_key_names_the_key_whose_former_form_a_key_is(key, expected):
    assert of_former_key(key) == expected
