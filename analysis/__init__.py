"""Analysis of a sweep's MLflow records: leaderboard, verdicts, export, confirmation, plots, report.

Reads only what `search/` records, by the names `search/schema.py` defines
(docs/contracts.md in words), and retrains through `trainables`; imports no
Ray. `python -m analysis --help` lists the commands.
"""

import os

# As in `search`: MLflow's usage telemetry stays off unless the user turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
