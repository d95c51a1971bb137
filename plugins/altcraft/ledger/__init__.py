"""The SQL sync ledger: exactly-once scenario launches and an outcome for every contact (docs/ledger.md).

* :mod:`~altcraft.ledger.model`: scopes, runs, outcomes, claims, settlements, verdicts;
* :mod:`~altcraft.ledger.rules`: the exactly-once rules as pure functions;
* :mod:`~altcraft.ledger.schema`: the tables; :mod:`~altcraft.ledger.statements`: batch-sized SQL;
* :mod:`~altcraft.ledger.store`: :class:`Ledger`, one transaction per operation;
* :mod:`~altcraft.ledger.session`: :class:`LedgerSession`, the ledger bound to one task try.
"""

from altcraft.ledger.model import (
    Claim,
    ContactHistory,
    ContactStatus,
    IdentityChanged,
    Outcome,
    PositionLocked,
    Resolution,
    RunRef,
    Scope,
    SentTask,
    Settlement,
    UncertainContact,
    normalise_platform,
)
from altcraft.ledger.schema import (
    activity_table,
    aliases_table,
    contacts_table,
    identities_table,
    metadata,
    outcomes_table,
    tasks_table,
)
from altcraft.ledger.session import LedgerSession
from altcraft.ledger.store import Ledger
from altcraft.relaunch import RelaunchPolicy

__all__ = [
    "Claim",
    "ContactHistory",
    "ContactStatus",
    "IdentityChanged",
    "Ledger",
    "LedgerSession",
    "Outcome",
    "PositionLocked",
    "RelaunchPolicy",
    "Resolution",
    "RunRef",
    "Scope",
    "SentTask",
    "Settlement",
    "UncertainContact",
    "activity_table",
    "aliases_table",
    "contacts_table",
    "identities_table",
    "metadata",
    "normalise_platform",
    "outcomes_table",
    "tasks_table",
]
