"""Provider metadata read by Airflow's ProvidersManager (``apache_airflow_provider`` entry point).

The connection form is declared here (``conn-fields``, ``ui-field-behaviour``) so the UI can render it
without importing the hook.
"""

from __future__ import annotations

from typing import Any

from altcraft import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-altcraft",
        "name": "Altcraft",
        "description": "Import contacts into the Altcraft marketing platform and launch them into "
        "automation scenarios exactly once.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Altcraft",
                "external-doc-url": "https://guides.altcraft.com/en/developer-guide",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Altcraft",
                "python-modules": ["altcraft.hooks.altcraft", "altcraft.hooks.altcraft_async"],
            }
        ],
        "operators": [
            {"integration-name": "Altcraft", "python-modules": ["altcraft.operators.import_and_launch"]}
        ],
        "triggers": [{"integration-name": "Altcraft", "python-modules": ["altcraft.triggers.task_status"]}],
        "extra-links": ["altcraft.operators.import_and_launch.AltcraftScenarioLink"],
        "config": {
            "altcraft": {
                "description": "Defaults of the Altcraft provider.",
                "options": {
                    "ledger_conn_id": {
                        "description": "Connection of the SQL database that holds the sync ledger when "
                        "a task does not name one (ledger_conn_id); set it alike on every component "
                        "(a webhook's API server and triggerer follow the DAG processor's). Empty: a SQLite "
                        "file in AIRFLOW_HOME, which only suits a single machine.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "crm_postgres",
                        "default": "",
                    },
                    "webhook_public_url": {
                        "description": "Scheme and host the CRMs post webhook deliveries to "
                        "(https://hooks.example.com), read by the API server: a signature covering the URL "
                        "(HubSpot's) is verified against it with the request's path and query only, never "
                        "the Host or X-Forwarded-* headers. A pipeline's trigger.public_url wins. Empty: the "
                        "URL as received or as X-Forwarded-Proto and X-Forwarded-Host name it, which the "
                        "sender chooses.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://hooks.example.com",
                        "default": "",
                    },
                    "ui_show_contact_keys": {
                        "description": "Show contact keys (emails, phones, ids) in clear on the Altcraft "
                        "page of the Airflow UI and in its CSV export. Default: masked (a***@e***.org). "
                        "Turn on only where everyone with access to the Airflow UI may see contact data.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                },
            }
        },
        "connection-types": [
            {
                "hook-class-name": "altcraft.hooks.altcraft.AltcraftHook",
                "hook-name": "Altcraft",
                "connection-type": "altcraft",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "Platform URL", "password": "API token"},
                    "placeholders": {
                        "host": "https://ru.altkraft.com",
                        "password": "token from Settings → Tokens",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Seconds one request may take in all: connect, send and the whole "
                        "answer (default 60).",
                        "schema": {"type": ["number", "null"], "minimum": 1, "maximum": 86400, "default": 60},
                    },
                    "max_retries": {
                        "label": "Retries",
                        "description": "Retries of a failed request that may safely be repeated (default 5). "
                        "Scenario launches are retried only when Altcraft certainly did not process them.",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 100, "default": 5},
                    },
                    "backoff_max": {
                        "label": "Longest wait between retries (seconds)",
                        "description": "Cap of the exponential backoff with jitter (default 30).",
                        "schema": {"type": ["number", "null"], "minimum": 0, "maximum": 3600, "default": 30},
                    },
                    "token_in_body": {
                        "label": "Also send the token in the request body",
                        "description": "Older on-premises versions read the token only from the JSON body "
                        "(default on). It is always sent as 'Authorization: Bearer'.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "max_answer_bytes": {
                        "label": "Largest answer (bytes)",
                        "description": "Largest answer body read, in decoded bytes (default 67108864, "
                        "64 MiB); a larger one is an error.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 1,
                            "maximum": 1073741824,
                            "default": 67108864,
                        },
                    },
                    "batch_item_layout": {
                        "label": "Scenario batch item layout",
                        "description": "hedged (default: the key on the item and in data), nested, data "
                        "or flat; pin one once `python -m altcraft probe --test-contact` showed what the "
                        "account accepts.",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["hedged", "nested", "data", "flat"],
                            "default": "hedged",
                        },
                    },
                    "scenario_url": {
                        "label": "Scenario URL pattern",
                        "description": "Link shown on task instances, with {base_url} and {scenario_id} "
                        "(default {base_url}/workflows/{scenario_id}).",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "{base_url}/workflows/{scenario_id}",
                        },
                    },
                },
            }
        ],
    }
