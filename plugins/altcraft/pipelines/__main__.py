"""``python -m altcraft.pipelines init|check <dags_folder>``: see `altcraft.pipelines.dag_folder`."""

import sys

from altcraft.pipelines.dag_folder import main

sys.exit(main())
