"""The Dagster layer: the assets (one module per stage, each a ``build`` factory over the
step registry), their checks, the partitions and resource, the job, schedule and sensors
(``automation``), ``definitions``, the recording of DVC-run stages (``record``) and the
commands that use Dagster (``run``, ``ui``, ``cli``). Each asset calls the step in
``pipelines.steps``, the same code DVC stages run."""
