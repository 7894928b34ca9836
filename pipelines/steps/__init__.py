"""One module per pipeline step; each step is a function ``f(scenario, paths, ...)``
named in ``pipelines/registry.py``."""
