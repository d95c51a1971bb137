"""The ``altcraft_webhooks`` Airflow plugin: mounts the webhook endpoint in the API server.

Registered through the ``airflow.plugins`` entry point, so installing the provider is enough; the
endpoint is ``<API server>/altcraft-webhooks/<pipeline id>``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from altcraft.webhooks.app import create_app

#: Not under ``/altcraft``: the altcraft_ui plugin mounts its app there, and a mount takes every path below.
URL_PREFIX = "/altcraft-webhooks"


class AltcraftWebhooksPlugin(AirflowPlugin):
    name = "altcraft_webhooks"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Altcraft webhooks"}]
