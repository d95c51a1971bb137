"""``python -m altcraft.pipelines init <dags_folder>``: see `altcraft.pipelines.dag_folder`."""

import sys

from altcraft.pipelines.dag_folder import main

sys.exit(main())
