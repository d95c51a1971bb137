"""The ledger as one task try uses it: every call bound to the try's scope and run.

A dry-run session makes the same claim decisions without writing anything, and remembers across chunks
the contacts it would have sent (a real run skips them in a later chunk, as launched or in flight by this
run). Its other writes do nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from altcraft.ledger.model import (
    Claim,
    Outcome,
    Resolution,
    RunRef,
    Scope,
    SentTask,
    Settlement,
    UncertainContact,
)
from altcraft.ledger.rules import DEFAULT_GRACE
from altcraft.relaunch import RelaunchPolicy

if TYPE_CHECKING:
    from altcraft.ledger.store import Ledger, OpenClaim
    from altcraft.modes import DeliveryMode

#: Why a dry run predicts a contact skipped that an earlier chunk of it would have sent.
PREDICTED_SENT = "already launched by this run (dry run)"


@dataclass
class LedgerSession:
    """``ledger`` for one try (``run``) in one ``scope``; made by :meth:`Ledger.session`.

    It holds no transaction and needs no closing: each call is the ledger's own transaction (which
    creates the tables first if missing), and a claim left unsettled must stay ``sending`` for the next
    try's recovery.
    """

    ledger: Ledger
    scope: Scope
    run: RunRef
    dry_run: bool = False
    _predicted: set[str] = field(default_factory=set, init=False, repr=False)

    def is_earlier(self, claim: Claim) -> bool:
        """Whether ``claim`` was made by an earlier try of this task (its async task, settled by this try)."""
        return claim.try_number not in (None, self.run.try_number)

    def identify(self, identity: str) -> None:
        """:meth:`Ledger.identify` for this try (a dry run only reads)."""
        self.ledger.identify(self.scope, self.run, identity, dry_run=self.dry_run)

    def recover(self) -> list[str]:
        """:meth:`Ledger.recover` for this try (nothing in a dry run)."""
        return [] if self.dry_run else self.ledger.recover(self.scope, self.run)

    def record(self, outcome: Outcome, rows: Sequence[tuple[str | None, str, int | None, str]]) -> None:
        """:meth:`Ledger.record` for this try (nothing in a dry run)."""
        if not self.dry_run:
            self.ledger.record(self.scope, self.run, outcome, rows)

    def claim(
        self,
        items: Sequence[tuple[str, str]],
        policy: RelaunchPolicy,
        *,
        relaunch: bool = False,
        resend_uncertain: bool = False,
        marker: str | None = None,
        delivery_mode: DeliveryMode | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
        grace: timedelta = DEFAULT_GRACE,
        hold: Collection[str] = frozenset(),
    ) -> Claim:
        """:meth:`Ledger.claim` for this try; a dry run predicts it, counting what it would have sent."""
        claim = self.ledger.claim(
            self.scope,
            self.run,
            items,
            policy,
            relaunch=relaunch,
            resend_uncertain=resend_uncertain,
            marker=marker,
            delivery_mode=delivery_mode,
            aliases=aliases,
            grace=grace,
            hold=hold,
            dry_run=self.dry_run,
        )
        if self.dry_run:
            for key in list(claim.to_send):
                identities = {claim.contact_hash(self.scope, key), *(aliases or {}).get(key, ())}
                if identities & self._predicted:
                    claim.to_send.remove(key)
                    claim.skipped[key] = PREDICTED_SENT
                self._predicted |= identities
        return claim

    def open_claim(
        self,
        items: Sequence[tuple[str, str]],
        policy: RelaunchPolicy,
        *,
        relaunch: bool = False,
        resend_uncertain: bool = False,
        marker: str | None = None,
        delivery_mode: DeliveryMode | None = None,
        grace: timedelta = DEFAULT_GRACE,
    ) -> OpenClaim:
        """:meth:`Ledger.open_claim` for this try (not in a dry run, which writes nothing)."""
        if self.dry_run:
            raise ValueError("a dry run predicts its claims: it has no transaction to leave open")
        return self.ledger.open_claim(
            self.scope,
            self.run,
            items,
            policy,
            relaunch=relaunch,
            resend_uncertain=resend_uncertain,
            marker=marker,
            delivery_mode=delivery_mode,
            grace=grace,
        )

    def claim_of(self, batch_id: str) -> Claim:
        return self.ledger.claim_of(self.scope, batch_id)

    def record_task(self, batch_id: str, task_id: str, keys: Sequence[str]) -> None:
        """:meth:`Ledger.record_task` (nothing in a dry run)."""
        if not self.dry_run:
            self.ledger.record_task(self.scope, batch_id, task_id, keys)

    def sent_tasks(self, batch_ids: Iterable[str]) -> dict[str, SentTask]:
        return self.ledger.sent_tasks(self.scope, batch_ids)

    def settle(self, claim: Claim, settlements: Mapping[str, Settlement]) -> None:
        """:meth:`Ledger.settle`, recorded as outcomes of the try that made the claim."""
        if self.dry_run:
            return
        run = replace(self.run, try_number=claim.try_number) if self.is_earlier(claim) else self.run
        self.ledger.settle(self.scope, run, claim, settlements)

    def uncertain_contacts(
        self, keys: Iterable[str] | None = None, aliases: Mapping[str, Sequence[str]] | None = None
    ) -> list[UncertainContact]:
        return self.ledger.uncertain_contacts(self.scope, keys, aliases=aliases)

    def contact_rows(
        self, keys: Iterable[str], aliases: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, str]:
        return self.ledger.contact_rows(self.scope, keys, aliases=aliases)

    def to_reconcile(
        self,
        keys: Iterable[str] | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
        limit: int | None = None,
    ) -> list[UncertainContact]:
        """:meth:`Ledger.to_reconcile` for this try (``keys`` None: the whole scenario, at most ``limit`` of
        it); a dry run changes no row: the uncertain ones only."""
        if self.dry_run:
            return self.uncertain_contacts(keys, aliases)
        return self.ledger.to_reconcile(self.scope, self.run, keys, aliases=aliases, limit=limit)

    def resolve(
        self, contacts: Sequence[UncertainContact], resolutions: Mapping[str, Resolution]
    ) -> dict[Outcome, int]:
        """:meth:`Ledger.resolve` (nothing in a dry run)."""
        return {} if self.dry_run else self.ledger.resolve(self.scope, contacts, resolutions)

    def mark_checked(self, contacts: Sequence[UncertainContact]) -> None:
        """:meth:`Ledger.mark_checked` (nothing in a dry run)."""
        if not self.dry_run:
            self.ledger.mark_checked(contacts)

    def standing(self) -> dict[str, int]:
        return self.ledger.standing(self.scope)

    def now(self) -> datetime:
        """:meth:`Ledger.now`: the ledger database's time."""
        return self.ledger.now()

    def counts(self) -> dict[Outcome, int]:
        return self.ledger.counts(self.scope, self.run)
