"""A sample CRM: a ``contacts`` table of people who signed up over the last days, a few rows broken.

``python demo/seed_crm.py --url sqlite:///.airflow/demo_crm.db`` (any SQLAlchemy URL: the compose file
seeds PostgreSQL with it). Columns: ``id``, ``email``, ``first_name``, ``loyalty``, ``created_at`` (UTC),
as read by the demo pipeline dags/pipelines/demo_sqlite_welcome.yaml. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

TABLE = "contacts"
FIRST_NAMES = ("Anna", "Ivan", "Maria", "Oleg", "Elena", "Pavel", "Olga", "Sergey", "Daria", "Nikita")
LAST_NAMES = ("petrova", "ivanov", "smirnova", "kuznetsov", "popova", "sokolov", "lebedeva", "kozlov")
#: What breaks a row in real CRMs, as (the email column's value, the field the mapping rejects).
BROKEN_EMAILS: tuple[tuple[str | None, str], ...] = (
    ("anna.example.org", "email"),  # no @
    (None, "email"),  # missing matching key
    ("ivan@@example.org", "email"),
    ("", "email"),  # empty matching key
    ("maria@example..org", "email"),
    ("oleg petrov@example.org", "email"),
)


@dataclass(frozen=True)
class Contact:
    """One CRM row, and what the demo pipeline should make of it."""

    id: int
    email: str | None
    first_name: str
    loyalty: int | None
    created_at: datetime
    problem: str | None = None  # the field the mapping rejects; None for a valid row
    duplicate_of: int | None = None  # id of an earlier row with the same email

    def row(self, dialect: str) -> dict[str, object]:
        created = self.created_at.replace(tzinfo=None) if dialect == "sqlite" else self.created_at
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "loyalty": self.loyalty,
            "created_at": created,
        }


def sample_contacts(
    *,
    end: datetime,
    days: int,
    per_day: int,
    broken_every: int = 40,
    duplicate_every: int = 0,
    seed: int = 7,
) -> list[Contact]:
    """``per_day`` contacts in each of the ``days`` whole UTC days before ``end`` (midnight), by time.

    Every ``broken_every``-th row is broken (cycling through `BROKEN_EMAILS`); every
    ``duplicate_every``-th row (0: none) signs up again with the email of an earlier valid row.
    """
    rng = random.Random(seed)
    end = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    contacts: list[Contact] = []
    valid: list[Contact] = []
    for number, created in enumerate(_times(rng, end - timedelta(days=days), days, per_day), start=1):
        first = rng.choice(FIRST_NAMES)
        email: str | None = f"{first.lower()}.{rng.choice(LAST_NAMES)}{number}@example.org"
        problem = duplicate = None
        if broken_every and number % broken_every == 0:
            email, problem = BROKEN_EMAILS[(number // broken_every - 1) % len(BROKEN_EMAILS)]
        elif duplicate_every and number % duplicate_every == 0 and valid:
            original = rng.choice(valid)
            email, duplicate = original.email, original.id
        loyalty = rng.choice((None, 0, 1, 2, 3))
        contact = Contact(number, email, first, loyalty, created, problem, duplicate)
        contacts.append(contact)
        if problem is None and duplicate is None:
            valid.append(contact)
    return contacts


def _times(rng: random.Random, start: datetime, days: int, per_day: int) -> Iterator[datetime]:
    for day in range(days):
        midnight = start + timedelta(days=day)
        seconds = sorted(rng.randrange(86_400) for _ in range(per_day))
        yield from (midnight + timedelta(seconds=s) for s in seconds)


def contacts_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.Text),
        sa.Column("first_name", sa.Text),
        sa.Column("loyalty", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def write_contacts(url: str, contacts: Iterable[Contact]) -> int:
    """(Re)create the ``contacts`` table at ``url`` holding ``contacts``; returns how many rows."""
    engine = sa.create_engine(url)
    try:
        table = contacts_table(sa.MetaData())
        rows = [contact.row(engine.dialect.name) for contact in contacts]
        with engine.begin() as conn:
            table.drop(conn, checkfirst=True)
            table.create(conn)
            conn.execute(table.insert(), rows)
        return len(rows)
    finally:
        engine.dispose()


def has_contacts(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).has_table(TABLE)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the CRM database")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--per-day", type=int, default=250)
    parser.add_argument("--if-missing", action="store_true", help="keep an existing contacts table")
    args = parser.parse_args(argv)
    if args.if_missing and has_contacts(args.url):
        print(f"The CRM at {args.url} already has a {TABLE} table; kept as it is.")
        return
    contacts = sample_contacts(
        end=datetime.now(UTC), days=args.days, per_day=args.per_day, duplicate_every=97
    )
    count = write_contacts(args.url, contacts)
    broken = sum(contact.problem is not None for contact in contacts)
    print(f"Wrote {count} contacts ({broken} broken) over {args.days} days to {args.url}")


if __name__ == "__main__":
    main()
