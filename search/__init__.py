"""The sweep service: search spaces, the sweep driver, MLflow recording."""

import os

# MLflow reads this once, when first imported: its usage telemetry stays off unless the
# user turns it on (MLFLOW_DISABLE_TELEMETRY=false). A sweep reports to its own store only.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
