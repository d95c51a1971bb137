"""A watcher trigger that fires a pipeline's event asset when its source has new rows.

Runs in the triggerer as an `AssetWatcher` of the pipeline's event asset (see
`altcraft.pipelines.events`). Every ``poll_interval`` seconds it asks the source one cheap question --
``probe()``: a count and the newest value past the pipeline's position, never the rows -- and fires when
the answer changed since it last fired. The position and what it last fired for live in the asset's state
store, not in memory, so a restarted triggerer neither forgets nor refires old rows.

* window sources (SQL table / query, REST): rows created at or after the watermark. Not before it
  (``lookback``): rows a run already read would fire again after every run. A row committed late with
  an older creation time is read by the next run's ``lookback``, or by the schedule kept as a safety net;
* the webhook source: deliveries stored past the last id a run handled in the pipeline's ledger database.

A burst of new rows gives one event per poll at most, and Airflow folds every event queued while the
pipeline's ``max_active_runs`` runs are active into one next run, so a burst becomes a few runs. Below
that limit an event starts a run at once, beside the active ones (they overlap; the ledger claims each
contact once). Firing is at-least-once: what was fired is
saved only after the triggerer took the event, and rows still past an unmoved position are fired for
again after `REFIRE_AFTER` (an event lost in a crash, a run that failed); a repeated event only costs a
run, the ledger launches nobody twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from altcraft.masking import scrub
from altcraft.pipelines.events import SEEN_KEY, WATERMARK_KEY
from altcraft.sources.webhook import POSITIONS_KEY, WATCHED_KEY, position_in
from altcraft.sources.webhook import STATE_KEY as WEBHOOK_KEY

log = logging.getLogger(__name__)

#: Seconds after which rows still past an unmoved position are fired for again.
REFIRE_AFTER = 300.0
#: Seconds a probe may go unanswered (a dead connection) before each error saying it still waits; a SQL
#: probe's query is cancelled by the database before (`altcraft.sources.base.PROBE_TIMEOUT`).
SLOW_PROBE_AFTER = 60.0


class AsyncStateStore(Protocol):
    async def aget(self, key: str, default: Any = None) -> Any: ...

    async def aset(self, key: str, value: Any) -> None: ...


class NewRowsTrigger(BaseEventTrigger):
    """Fire when ``source`` (a dumped source spec) has rows past the pipeline's position.

    :param pipeline: the pipeline (DAG) id, for logs and the event.
    :param source: the pipeline's ``source:`` block as JSON (`SourceSpec` dump); built in the triggerer.
    :param poll_interval: seconds between probes.
    """

    def __init__(self, *, pipeline: str, source: dict[str, Any], poll_interval: float = 5.0):
        super().__init__()
        self.pipeline = pipeline
        self.source = source
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pipeline": self.pipeline,
                "source": self.source,
                "poll_interval": self.poll_interval,
            },
        )

    @property
    def by_window(self) -> bool:
        return self.source.get("type") != "webhook" and not self.source.get("webhook")

    def build_source(self) -> Any:
        from pydantic import TypeAdapter

        from altcraft.sources.spec import SourceSpec

        return TypeAdapter(SourceSpec).validate_python(self.source).build()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state = self.asset_state_store
        if state is None:
            raise RuntimeError("NewRowsTrigger runs only as the asset watcher of a pipeline's event asset")
        source = self.build_source()
        if not self.by_window:  # where the API server must store, and a worker read, the deliveries
            await self.record_placement(state, source)
        self.log.info(
            "Watching %s for pipeline %s every %ss", source.describe(), self.pipeline, self.poll_interval
        )
        try:
            while True:
                try:
                    event = await self.answer_of(self.poll_once(state, source))
                except Exception as error:  # a database or API hiccup must not end the watch
                    self.log.error(  # scrubbed: a database's message may quote a row's email or phone
                        "Probe of %s failed, next try in %ss: %s",
                        self.pipeline,
                        self.poll_interval,
                        scrub(error),
                    )
                    event = None
                if event is not None:
                    self.log.info("New rows for %s: %s", self.pipeline, event)
                    yield TriggerEvent(event)
                    seen = {**event["fingerprint"], "fired_at": event["detected_at"]}
                    await state.aset(SEEN_KEY, seen)  # after the triggerer took the event: at-least-once
                await asyncio.sleep(self.poll_interval)
        finally:
            await asyncio.to_thread(source.close_probe)

    async def answer_of(self, probe: Coroutine[Any, Any, dict[str, Any] | None]) -> dict[str, Any] | None:
        """The probe's answer, waited for as long as it takes (a probe's thread cannot be stopped, and a
        second one beside it would wait alike), with an error logged every `SLOW_PROBE_AFTER` seconds."""
        task = asyncio.ensure_future(probe)
        started = asyncio.get_running_loop().time()
        try:
            while not (await asyncio.wait({task}, timeout=SLOW_PROBE_AFTER))[0]:
                self.log.error(
                    "Probe of %s has not answered for %.1fs (a lock on the table, a connection that died?): "
                    "no event until it does",
                    self.pipeline,
                    asyncio.get_running_loop().time() - started,
                )
            return task.result()
        finally:
            task.cancel()  # when the watch itself is cancelled; a no-op once the probe answered

    async def record_placement(self, state: AsyncStateStore, source: Any) -> None:
        """Record where the deliveries are watched (`WATCHED_KEY`); where that cannot be known (a store this
        component refuses) the error is logged, the record left as it was, and each probe fails saying why."""
        try:
            await state.aset(WATCHED_KEY, await asyncio.to_thread(source.placement))
        except Exception as error:
            self.log.error("Where %s watches its deliveries is not known: %s", self.pipeline, scrub(error))

    async def poll_once(self, state: AsyncStateStore, source: Any) -> dict[str, Any] | None:
        """One probe: the event to fire, or None when nothing changed since the last one fired."""
        if self.by_window:
            position = await state.aget(WATERMARK_KEY)
            if position is None:  # first start: react to rows from now on (older ones: schedule/backfill)
                position = datetime.now(UTC).isoformat()
                await state.aset(WATERMARK_KEY, position)
            count, newest = await asyncio.to_thread(source.probe, datetime.fromisoformat(position))
        else:
            last_id, positions = await state.aget(WEBHOOK_KEY), await state.aget(POSITIONS_KEY)
            position = position_in(await asyncio.to_thread(source.placement), last_id, positions)
            count, newest = await asyncio.to_thread(source.probe, position)
        fingerprint = {"position": position, "count": count, "newest": newest}
        now = datetime.now(UTC)
        seen = await state.aget(SEEN_KEY) or {}
        fired_at = seen.get("fired_at")
        unchanged = {key: seen.get(key) for key in fingerprint} == fingerprint
        recent = (
            fired_at is not None and (now - datetime.fromisoformat(fired_at)).total_seconds() < REFIRE_AFTER
        )
        if count == 0 or (unchanged and recent):
            return None
        if unchanged:  # rows fired for long ago and still past an unmoved position: say why they are again
            self.log.warning(
                "%d row(s) of %s still past position %s since the last event for them at %s (its run failed "
                "or left them to another run, or the event was lost?): firing again",
                count,
                self.pipeline,
                position,
                fired_at,
            )
        return {"pipeline": self.pipeline, "fingerprint": fingerprint, "detected_at": now.isoformat()}
