"""The domain layer: scenario files, paths, io, the steps, locks, the step registry and
dvc.yaml generator, DVC recording, lineage, the model card and the stage command. It
imports no Dagster (docs/DESIGN.md)."""
