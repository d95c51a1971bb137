"""Many clients at once: every launch journalled exactly once, profiles never doubled, no 500s."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from .helpers import ok

BATCH, TASK = "workflows/import_and_start_batch", "workflows/import_and_start_batch_task"


def _launch(emulator, client: int, round_: int) -> tuple[int, int]:
    """One batch (or task, polled to its end) of 5 shared and 5 own profiles: (scenario, items launched)."""
    scenario = 14 if round_ % 2 else 12
    items = [{"email": f"shared{i}@example.org"} for i in range(5)]
    items += [{"email": f"c{client}r{round_}i{i}@example.org"} for i in range(5)]
    endpoint = TASK if round_ % 3 == 0 else BATCH
    answer = ok(emulator.post(endpoint, {"workflow_id": scenario, "data": items}))
    if endpoint == TASK:
        while (status := ok(emulator.post("tasks/status", {"task_id": answer["data"]["task_id"]}))["data"])[
            "status"
        ] in ("queued", "running"):
            time.sleep(0.02)
        answer = status["result"]
    return scenario, sum(1 for result in answer["result"] if result["error"] == 0)


def test_concurrent_batches_and_tasks_keep_journal_and_profiles_consistent(altcraft_emulator):
    altcraft_emulator.seed(scenarios=[{"id": 14, "db_id": 1, "mode": "skip"}])
    altcraft_emulator.config(task_delay_seconds=0)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(
            pool.map(
                lambda job: _launch(altcraft_emulator, *job), [(c, r) for c in range(8) for r in range(6)]
            )
        )
    launched = Counter()
    for scenario, count in outcomes:
        launched[scenario] += count
    journal = altcraft_emulator.journal()
    assert [entry["seq"] for entry in journal] == list(range(1, len(journal) + 1))
    assert Counter(entry["scenario_id"] for entry in journal) == launched == {12: 240, 14: 240}
    # mode "skip": each profile enters once, however many clients launch it at the same time
    entered = Counter(
        entry["profile_id"] for entry in journal if entry["scenario_id"] == 14 and entry["entered"]
    )
    assert set(entered.values()) == {1} and len(entered) == 5 + 8 * 3 * 5
    emails = [profile["fields"]["email"] for profile in altcraft_emulator.profiles(1)]
    assert len(emails) == len(set(emails)) == 5 + 8 * 6 * 5


def test_a_reset_during_traffic_answers_every_request(altcraft_emulator):
    def traffic(client: int) -> Counter:
        codes: Counter = Counter()
        for round_ in range(15):
            items = [{"email": f"c{client}r{round_}i{i}@example.org"} for i in range(20)]
            codes[altcraft_emulator.post(BATCH, {"workflow_id": 12, "data": items}).status_code] += 1
        return codes

    with ThreadPoolExecutor(5) as pool:
        running = [pool.submit(traffic, client) for client in range(4)]
        for _ in range(10):
            altcraft_emulator.reset()
            time.sleep(0.02)
        codes = sum((future.result() for future in running), Counter())
    assert codes == {200: 60}
    journal = altcraft_emulator.journal()
    assert [entry["seq"] for entry in journal] == list(range(1, len(journal) + 1))
    assert (
        len({entry["profile_id"] for entry in journal}) == len(journal) == len(altcraft_emulator.profiles(1))
    )
    assert requests.get(f"{altcraft_emulator.url}/_emulator/state", timeout=10).status_code == 200
