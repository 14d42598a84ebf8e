"""The floor every layer stands on: the settings tree, the error taxonomy, id validation and
the Prometheus metrics, defined once. Nothing here imports the rest of the package."""
