"""The sweep service: search spaces, the sweep driver, MLflow recording."""
