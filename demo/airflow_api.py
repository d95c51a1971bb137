"""A small client of Airflow 3's REST API (``/api/v2``) with the simple auth manager's token login."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

T = TypeVar("T")
FINISHED = ("success", "failed")
SUMMARY_COUNTS = ("found", "launched", "skipped", "rejected", "failed", "uncertain")


class AirflowApi:
    """``/api/v2`` calls as a user of the simple auth manager (``POST /auth/token`` gives the JWT)."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 90):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.credentials = (username, password)
        self._credentials = {"username": username, "password": password}
        self._session = requests.Session()

    def login(self) -> None:
        response = self._session.post(f"{self.url}/auth/token", json=self._credentials, timeout=self.timeout)
        response.raise_for_status()
        self._session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON answer of ``/api/v2/<path>``; logs in first, and again once if the token expired."""
        for attempt in (1, 2):
            if "Authorization" not in self._session.headers:
                self.login()
            response = self._session.request(
                method, f"{self.url}/api/v2/{path}", timeout=self.timeout, **kwargs
            )
            if response.status_code == 401 and attempt == 1:
                del self._session.headers["Authorization"]
                continue
            if response.status_code >= 400:
                raise requests.HTTPError(
                    f"{method} /api/v2/{path}: {response.status_code} {response.text}", response=response
                )
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    # ---------------------------------------------------------------------------------------- state

    def healthy(self) -> bool:
        """Whether the API server answers and its metadata database is reachable."""
        try:
            answer = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return False
        return answer.ok and answer.json().get("metadatabase", {}).get("status") == "healthy"

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        try:
            return self.get(f"dags/{dag_id}")
        except requests.HTTPError as error:
            if error.response is not None and error.response.status_code == 404:
                return None
            raise

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def put_connection(self, connection_id: str, conn_type: str, **fields: Any) -> None:
        """Create the connection, or overwrite the one with this id."""
        entity = {"connection_id": connection_id, "conn_type": conn_type, **fields}
        action = {"action": "create", "entities": [entity], "action_on_existence": "overwrite"}
        answer = self.request("PATCH", "connections", json={"actions": [action]})
        if answer["create"]["errors"]:
            raise RuntimeError(f"could not save connection {connection_id}: {answer['create']['errors']}")

    def import_errors(self) -> dict[str, str]:
        """The import errors Airflow lists (UI banner, ``airflow dags list-import-errors``): file → text."""
        answer = self.get("importErrors", limit=1000)
        return {error["filename"]: error["stack_trace"] for error in answer["import_errors"]}

    def trigger(self, dag_id: str, **body: Any) -> dict[str, Any]:
        """``POST dags/<id>/dagRuns``; ``logical_date`` defaults to null (Airflow 3's manual run)."""
        return self.request("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, **body})

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of the DAG, oldest logical date first."""
        answer = self.get(f"dags/{dag_id}/dagRuns", limit=1000, order_by="logical_date")
        return answer["dag_runs"]

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        return self.get("backfills", dag_id=dag_id, limit=1000)["backfills"]

    def task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """The task's instances in a run (one per map index for a mapped task)."""
        answer = self.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", task_id=task_id, limit=1000)
        return [ti for ti in answer["task_instances"] if ti["task_id"] == task_id]

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"
    ) -> Any:
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.get(path, map_index=map_index)["value"]

    def run_summary(self, dag_id: str, run_id: str, task_id: str) -> dict[str, int]:
        """The delivery counts of a run: the XCom summaries of every map index of ``task_id``, added up."""
        total = dict.fromkeys(SUMMARY_COUNTS, 0)
        for ti in self.task_instances(dag_id, run_id, task_id):
            if ti["state"] == "skipped":  # an empty window
                continue
            summary = self.xcom(dag_id, run_id, task_id, ti["map_index"])
            for name in SUMMARY_COUNTS:
                total[name] += int(summary[name])
        return total

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The log of one task try as text, one event per line (trigger logs of a deferred try included)."""
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        answer = self.get(path, map_index=map_index, full_content=True)
        return "\n".join(_log_line(part) for part in answer["content"])

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Clear one task of one run (its downstream too), so the scheduler runs it again."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": False}
        self.request("POST", f"dags/{dag_id}/clearTaskInstances", json=body)


def _log_line(part: Any) -> str:
    """One structured log event as text; an exception's type and message (``error_detail``) follow it."""
    if not isinstance(part, dict):
        return str(part)
    errors = part.get("error_detail") or []
    details = [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in errors if isinstance(e, dict)]
    return "\n".join([str(part.get("event", "")), *details])


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 1.0,
    check: Callable[[], None] = lambda: None,
) -> T:
    """Poll ``probe`` until it returns something truthy; TimeoutError naming ``what`` after ``timeout``.

    ``check`` runs before each poll and may raise (e.g. when a component process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        check()
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
