"""What the Altcraft page must know of a pipeline to plan its actions, carried by one DAG tag.

A pipeline DAG (`altcraft.pipelines.build_dag`, or a DAG an `ImportAndLaunchScenarioOperator` is created
in) is tagged ``altcraft-ui:source=position,grace=3600s`` when its source keeps a position between runs (a
new run reads only rows past it, never an earlier run's window again) or its reconciliation grace is not
the default. The API server keeps DAG tags in its metadata database, so the page reads them without
parsing DAG files. A DAG without the tag (its operator mapped, or a pipeline reading its window with the
default grace) is planned as reading its window, with `altcraft.reconciliation.DEFAULT_GRACE`. A spec's
own tags cannot hold ``=``: none looks like the marker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

PREFIX = "altcraft-ui:"
_MARKER = re.compile(rf"{PREFIX}source=(position|window)(?:,grace=(\d+)s)?")


@dataclass(frozen=True)
class Marker:
    """``keeps_position``: the source reads past a kept position, not the window; ``grace``: the pipeline's
    reconciliation grace (None: the default)."""

    keeps_position: bool = False
    grace: timedelta | None = None


def marker_tag(*, keeps_position: bool, grace_seconds: int | None) -> str | None:
    """The DAG tag of a pipeline; None when it says nothing a DAG without it does not."""
    if not keeps_position and grace_seconds is None:
        return None
    grace = "" if grace_seconds is None else f",grace={grace_seconds}s"
    return f"{PREFIX}source={'position' if keeps_position else 'window'}{grace}"


def read_marker(tags: Iterable[str]) -> Marker:
    """The marker among a DAG's tags; `Marker()` (its window, the default grace) without one."""
    for tag in sorted(tags):
        if found := _MARKER.fullmatch(tag):
            seconds = found.group(2)
            return Marker(found.group(1) == "position", timedelta(seconds=int(seconds)) if seconds else None)
    return Marker()
