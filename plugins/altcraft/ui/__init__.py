"""The "Altcraft" page inside the Airflow UI: pipelines, runs and contacts from the sync ledger.

Registered as the Airflow plugin ``altcraft_ui`` (entry point ``airflow.plugins``); see ``docs/ui.md``.
"""
