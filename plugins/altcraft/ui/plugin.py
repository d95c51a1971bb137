"""The ``altcraft_ui`` Airflow plugin: the "Altcraft" nav entry, its FastAPI app and the run link.

Loaded by every Airflow component through the ``airflow.plugins`` entry point, so this module stays
light: the FastAPI app (and with it Airflow's API-server modules) is imported only in the API server,
in the background when the server starts (`_Prepare`) or else on its first request.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

URL_PREFIX = "/altcraft"
URL_ROUTE = "altcraft"
OPERATOR = "ImportAndLaunchScenarioOperator"


class _App:
    """ASGI app that imports :mod:`altcraft.ui.app` when the API server first routes a request to it."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from altcraft.ui.app import app

        await app(scope, receive, send)


class _Prepare:
    """A pass-through root middleware; only the API server builds it, when it starts serving. It then
    prepares the Altcraft app in a background thread (`altcraft.ui.app.prepare`: imports, the ledger's
    connection pool, templates), so the first view of the page does not wait for that."""

    def __init__(self, app: Any) -> None:
        from airflow.models import import_all_models

        self.app = app
        # here, before any request: the thread below importing a model module while a request's first
        # ORM query configures the mappers (which imports every model) deadlocks the two (import lock
        # against SQLAlchemy's configure lock); Airflow's own API server has imported them all already
        import_all_models()
        threading.Thread(target=_prepare, name="altcraft-ui-prepare", daemon=True).start()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _prepare() -> None:
    try:
        from altcraft.ui.app import prepare

        prepare()
    except Exception:  # the page still works: its first request does the same
        log.warning("Altcraft page: could not prepare it in advance", exc_info=True)


class AltcraftRunLink(BaseOperatorLink):
    """ "Altcraft run" on an Altcraft launch task instance: the run's page inside the Airflow UI."""

    name = "Altcraft run"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        if getattr(operator, "task_type", None) != OPERATOR:
            return ""
        from altcraft.ui.airflow_runs import ui_root

        query = urlencode({"dag_id": ti_key.dag_id, "run_id": ti_key.run_id})
        return f"{ui_root()}/plugin/{URL_ROUTE}{URL_PREFIX}/run?{query}"


class AltcraftUIPlugin(AirflowPlugin):
    name = "altcraft_ui"
    fastapi_apps = [{"app": _App(), "url_prefix": URL_PREFIX, "name": "Altcraft"}]
    fastapi_root_middlewares = [{"middleware": _Prepare, "name": "Altcraft page preparation"}]
    external_views = [
        {
            "name": "Altcraft",
            "href": f"{URL_PREFIX}/",
            "url_route": URL_ROUTE,
            "destination": "nav",
            "nav_top_level": True,
            "icon": f"{URL_PREFIX}/static/icon.svg",
        }
    ]
    global_operator_extra_links = [AltcraftRunLink()]
