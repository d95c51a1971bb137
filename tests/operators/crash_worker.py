"""A worker process for the crash test: delivers contacts like one operator try, until it is killed.

Usage: python crash_worker.py LEDGER_URL SCENARIO_ID TRY_NUMBER COUNT
(the Altcraft connection comes from AIRFLOW_CONN_ALTCRAFT_DEFAULT, as in a task). A retry that is not
killed runs as `deliver` in the test's process.
"""

from __future__ import annotations

import json
import sys

import sqlalchemy as sa

from altcraft.delivery import Delivery
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Ledger, RunRef
from altcraft.mapping import ProfileMapping


def deliver(ledger_url: str, scenario_id: int, try_number: int, count: int) -> dict:
    """One try's delivery of ``count`` contacts: its summary, and how many contacts it recovered."""
    hook = AltcraftHook()
    hook.get_conn()
    engine = sa.create_engine(ledger_url)
    try:
        ledger = Ledger(engine)
        ledger.ensure_schema()
        run = RunRef(
            dag_id="crash", task_id="import_and_launch", run_id="run-1", try_number=try_number, window_key="w"
        )
        delivery = Delivery.create(
            hook,
            ledger,
            run,
            scenario_id=scenario_id,
            mapping=ProfileMapping.model_validate({"matching": "email", "key": {"email": "email"}}),
            key_column="id",
            batch_size=10,
        )
        recovered = delivery.recover({}, timeout=0, poll_interval=1)
        records = [{"id": i, "email": f"crash{i}@example.org"} for i in range(count)]
        summary = delivery.process([records[i : i + 10] for i in range(0, count, 10)])
        return {"recovered": len(recovered), **summary.as_dict()}
    finally:
        engine.dispose()


if __name__ == "__main__":
    print(json.dumps(deliver(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
