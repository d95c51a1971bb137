"""``python -m altcraft``: command-line tools of the provider (``probe``, ``mark-canonical-keys``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from altcraft.command_line import path_argument

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m altcraft``."""
    parser = argparse.ArgumentParser(prog="python -m altcraft")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser(
        "probe",
        help="check a connection, scenario and pipeline against the real Altcraft API",
        description="Read-only unless --test-contact is given; see altcraft.probe.",
    )
    probe.add_argument(
        "--conn-id", help="Airflow connection (default: the pipeline's, else altcraft_default)"
    )
    probe.add_argument("--scenario", type=int, help="scenario (workflow) id")
    probe.add_argument("--db", type=int, help="database the scenario must work on")
    probe.add_argument(
        "--pipeline", type=path_argument, help="pipeline spec YAML: its scenario, mapping fields and matching"
    )
    probe.add_argument(
        "--marker-field",
        help="custom field that carries the launch marker (default: the pipeline's launch_marker_field)",
    )
    probe.add_argument(
        "--test-contact",
        metavar="EMAIL|PHONE",
        help="launch this one contact into the scenario through single, batch (every layout) and async",
    )
    probe.add_argument(
        "--record",
        type=path_argument,
        metavar="FILE",
        help="write every exchange as JSON (for emulator --replay)",
    )
    probe.add_argument("--keep-contact", action="store_true", help="do not mask emails/phones in --record")
    probe.add_argument("--task-timeout", type=float, default=60.0, help="seconds to wait for the async task")
    mark = commands.add_parser(
        "mark-canonical-keys",
        help="stop looking custom keys up under the forms an earlier version wrote, if no row has one",
        description="See docs/ledger.md, 'Keys an earlier version wrote otherwise'.",
    )
    mark.add_argument(
        "--conn-id", help="the ledger's Airflow connection (default: [altcraft] ledger_conn_id, else SQLite)"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def mark_canonical_keys(conn_id: str | None) -> int:
    """`Ledger.mark_keys_canonical` of the ledger on ``conn_id``: 0 if marked, 1 if rows keep it unmarked."""
    from altcraft.ledger import Ledger

    ledger = Ledger.from_conn_id(conn_id)
    try:
        if not ledger.exists():
            print(
                f"mark-canonical-keys: no ledger in {_where(ledger.engine)}: nothing marked, nothing created "
                "(a wrong --conn-id, or no [altcraft] ledger_conn_id in this AIRFLOW_HOME?)",
                file=sys.stderr,
            )
            return 2
        found = ledger.mark_keys_canonical()
    finally:
        ledger.close()
    if found:
        print(
            f"mark-canonical-keys: {found} contact row(s) are keyed in a form an earlier version wrote "
            "(custom:1.0 of custom:1): not marked; claims keep looking keys up under those forms",
            file=sys.stderr,
        )
        return 1
    print("mark-canonical-keys: marked: no custom key is looked up under a former form any more")
    return 0


def _where(engine: Engine) -> str:
    """Which database ``engine`` is on, without its user, password or options."""
    from altcraft.engines import database_location

    at = database_location(engine)
    if "path" in at:
        return f"SQLite file {at['path']}"
    return f"{at['dialect']} database {at['database']!r} on {at['host']}:{at['port']}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from airflow.sdk.exceptions import AirflowNotFoundException
    from sqlalchemy.exc import DBAPIError

    from altcraft import probe
    from altcraft.api.errors import AltcraftError
    from altcraft.engines import ledger_conn_id

    try:
        if args.command == "mark-canonical-keys":
            return mark_canonical_keys(args.conn_id)
        return probe.main(args)
    except AirflowNotFoundException as exc:  # a connection not made yet, or made in another AIRFLOW_HOME
        print(
            f"{args.command}: {exc}: add it (`airflow connections add`) or name another with --conn-id",
            file=sys.stderr,
        )
        return 2
    except DBAPIError as exc:  # the ledger's database: not running, unreachable, refusing the user
        said = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        conn_id = ledger_conn_id(args.conn_id)
        where = f"connection {conn_id!r}" if conn_id else "the SQLite file in AIRFLOW_HOME"
        print(
            f"{args.command}: the ledger's database ({where}) cannot be used: {said}: check that its "
            "server runs and the connection's host, port and user, or name another with --conn-id",
            file=sys.stderr,
        )
        return 2
    except (ValueError, AltcraftError) as exc:  # an answer that does not fit: its places, not its values
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Read connections as `airflow connections get` does: outside a task, Airflow 3 looks only in the
    # environment and custom secrets backends unless the process says it is a server, so a connection
    # made with `airflow connections add` (the metadata database) was "not defined" for the probe.
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    sys.exit(main())
