"""Dagster software-defined assets, one module per stage. Thin: each reads the
scenario, calls the step in ``pipelines.steps`` (the same code DVC stages run),
and returns ``MaterializeResult`` with metadata and a content-hash data version."""
