"""Failure-notification targets named by dotted path in the tests (imported only when a run fails)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

CALLS: list[tuple[str, Any, dict[str, Any]]] = []


def record(context: Any, **kwargs: Any) -> None:
    CALLS.append(("callback", context["dag_run"], kwargs))


class RecordingNotifier(BaseNotifier):
    template_fields = ("channel",)

    def __init__(self, channel: str) -> None:
        super().__init__()
        self.channel = channel

    def notify(self, context: Any) -> None:
        CALLS.append(("notifier", context["dag_run"], {"channel": self.channel}))
