"""The module Airflow takes for this provider's: the distribution's name (``airflow-provider-altcraft``)
with underscores.

Airflow 3.3 imports a third-party provider's module by that guess to look for its example DAGs whenever it
lists DAG bundles with ``[core] load_examples`` on (``DagBundlesManager``); without this module it logged
"Could not load provider module airflow_provider_altcraft" with a traceback. The provider's code is the
``altcraft`` package; this module only names its provider metadata (`altcraft.provider_info`), and as a
module, not a package, it has no ``example_dags`` folder to offer.
"""

from altcraft.provider_info import get_provider_info

__all__ = ["get_provider_info"]
