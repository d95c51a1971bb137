"""Webhooks: a CRM calls the Airflow API server when a contact is created; the contacts wait in the ledger DB.

* `kinds`: how a delivery is authenticated and parsed, per kind (shared secret, HMAC signature; CRM
  presets plug in here by adding a `WebhookKind`).
* `store`: the durable table of accepted deliveries (in the ledger's database) and its cheap probe.
* `app` / `plugin`: the FastAPI endpoint ``POST /altcraft-webhooks/<pipeline id>`` served by the API
  server through the ``altcraft_webhooks`` Airflow plugin.

A pipeline with ``trigger: {type: webhook}`` reads the stored deliveries with the ``webhook`` source; its
watcher trigger (`altcraft.triggers.new_rows`) fires the pipeline's asset when new deliveries are stored.
See docs/pipelines.md#triggers-launch-within-seconds.
"""
