"""The pipeline's steps, in one place.

Each :class:`Step` says what it is called (the DVC stage ``<name>@<scenario>`` and the
``python -m pipelines.stage <name>`` argument), which Dagster asset holds its output,
the function that runs it, the files it reads and writes, the scenario keys it depends
on, and (computed from its module) the code it runs. Everything else is derived from
this table:

- ``pipelines.stage`` dispatches on it;
- the Dagster assets (``assets/``) take their key, upstream assets and ``code_version``
  from it — the code version is a hash of the step's code closure, the same files DVC
  watches, so the UI marks an asset stale exactly when ``dvc status`` reruns its stage;
- ``dvc.yaml`` is generated from it (``scenario-gan dvc-yaml``; a test checks the
  committed file is current), so every stage depends on the whole import closure of its
  step and on the scenario keys the step reads (the stage command's own code —
  ``pipelines/stage.py`` and the registry, lock and DVC helpers it imports — dispatches
  and locks but writes no output, so it is not a dependency);
- lineage and the reporting of DVC-run stages to Dagster read outputs from it.

Domain layer: imports neither Dagster nor ``assets``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("pipelines", "gan_core")
"""Packages whose files count as a step's code (third-party code is pinned by the
environment, not tracked per stage)."""

PARAMS_FILE = "data/{s}/params.yaml"
"""The scenario's resolved parameters (``scenarios/_defaults.yaml`` under
``scenarios/<s>.yaml``, every default filled in), written by the ``params`` step: the
params file every stage of the scenario depends on, key by key."""
PROJECT_PARAMS_FILE = "scenarios/_project.yaml"


@dataclass(frozen=True)
class Output:
    path: str
    """Relative to the project; ``{s}`` is the scenario."""
    kind: str = "outs"
    """How ``dvc.yaml`` declares it: ``outs``, ``metrics`` or ``plots``."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra ``dvc.yaml`` options (e.g. a plot's axes)."""

    def at(self, scenario: str) -> str:
        return self.path.format(s=scenario)


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    module: str
    """The module holding the step function; its import closure is the step's code."""
    function: str
    """``function(scenario, paths, **kwargs)`` runs the step for one scenario."""
    outputs: tuple[Output, ...]
    """The first one is the step's data version (Dagster) and its output in lineage."""
    asset: str | None = None
    """The Dagster asset holding the output; None for bookkeeping steps without one."""
    upstream: tuple[str, ...] = ()
    """Steps whose outputs this one reads (inputs = their first outputs, unless ``inputs``)."""
    inputs: tuple[str, ...] | None = None
    """Files read (``{s}``), when not simply the upstream steps' first outputs."""
    params: tuple[str, ...] = ()
    """Keys of the scenario's resolved parameters the step depends on."""
    project_params: tuple[str, ...] = ()
    """Keys of ``scenarios/_project.yaml`` the step depends on."""
    extra_deps: tuple[str, ...] = ()
    """More ``dvc.yaml`` dependencies (may use the generated vars, e.g. ``${item.source}``)."""
    not_code: tuple[str, ...] = ()
    """Files in the import closure that are listed per scenario instead (``extra_deps``)."""
    require: str | None = None
    """A function of ``module`` that raises when the result is a failed step (the stage
    command exits 1; the Dagster asset reports failed checks instead)."""

    def input_paths(self) -> tuple[str, ...]:
        if self.inputs is not None:
            return self.inputs
        return tuple(STEPS[u].outputs[0].path for u in self.upstream)

    def stage(self, scenario: str) -> str:
        return f"{self.name}@{scenario}"

    def output_paths(self, scenario: str, base: Path) -> list[Path]:
        return [base / o.at(scenario) for o in self.outputs]

    def function_object(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.function)

    def code_files(self, root: Path = PROJECT_ROOT) -> list[str]:
        """The step's code: every project file its module imports, directly or not
        (module- and function-level imports alike), relative to ``root``."""
        return [f for f in code_closure(self.module, root) if f not in self.not_code]

    def code_version(self, root: Path = PROJECT_ROOT) -> str:
        """A hash of :meth:`code_files`' contents: changes exactly when a file DVC
        watches for this stage changes."""
        h = hashlib.sha256()
        for f in code_closure(self.module, root):
            h.update(f.encode() + b"\0" + hashlib.sha256((root / f).read_bytes()).digest())
        return h.hexdigest()[:16]


_EVAL_OUTS = (
    Output("metrics/{s}.json", "metrics"),
    Output("models/{s}/eval/metrics.json"),
    Output("models/{s}/eval/samples.png", "plots"),
    Output("models/{s}/eval/interpolation.png", "plots"),
    Output("models/{s}/MODEL_CARD.md"),
)

STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step(
            "params",
            "Resolve the scenario's parameters: scenarios/_defaults.yaml under scenarios/<s>.yaml, every default filled in; the params file of every stage below.",
            "pipelines.scenario",
            "write_params",
            (Output(PARAMS_FILE),),
            extra_deps=("scenarios/_defaults.yaml", "scenarios/${key}.yaml"),
        ),
        Step(
            "ingest",
            "Decode, orient, convert and resize the scenario's images; quarantine bad files.",
            "pipelines.steps.ingest",
            "ingest",
            (Output("data/{s}/ingested"),),
            asset="ingested_images",
            inputs=(),
            params=("data", "image"),
            extra_deps=("${item.source}",),
            not_code=("pipelines/builtin_data.py",),
        ),
        Step(
            "validate",
            "great-expectations suite over the per-image table; exits 1 on a failed blocking expectation.",
            "pipelines.steps.validate",
            "validate",
            (Output("data/{s}/validated"),),
            asset="validated_images",
            upstream=("ingest",),
            params=("validation",),
            require="require_passed",
        ),
        Step(
            "augment",
            "Route each transform (real images / D's input / refused); the real-image albumentations pipeline, policy.json and a preview grid.",
            "pipelines.steps.augment",
            "augment",
            (Output("data/{s}/augmented"),),
            asset="augmented_images",
            upstream=("validate",),
            params=("augmentation", "domain"),
        ),
        Step(
            "ruler",
            "The scenario's ruler (feature net on its real training images, held-out split, the floor of every metric); rebuilt only when the real images change.",
            "pipelines.steps.ruler",
            "build_ruler",
            (Output("models/{s}/ruler"),),
            asset="ruler",
            upstream=("validate",),
            params=("evaluation.heldout_fraction", "evaluation.seed", "evaluation.feature_steps", "augmentation.invariances"),
        ),
        Step(
            "train",
            "Train the scenario's GAN with the budget of scenarios/_project.yaml's `profile` (cpu `gan:`, gpu `gan:` + `gpu:`); resumes an interrupted run.",
            "pipelines.steps.train",
            "train",
            (
                Output("models/{s}/generator.safetensors"),
                Output("models/{s}/split.json"),
                Output("models/{s}/summary.json"),
                Output("models/{s}/loss.csv", "plots", {"x": "step", "y": "loss_d"}),
            ),
            asset="generator",
            upstream=("validate", "augment"),
            params=("gan", "gpu", "evaluation.heldout_fraction", "evaluation.seed"),
            project_params=("profile",),
        ),
        Step(
            "evaluate",
            "The scenario's ruler on the model (FID/KID with their floor, precision/recall), a classifier two-sample test and sharpness, memorization and membership audits, sample grids, model card, the promotion verdict.",
            "pipelines.steps.evaluate",
            "evaluate",
            _EVAL_OUTS,
            asset="evaluation",
            upstream=("validate", "augment", "ruler", "train"),
            inputs=(
                "models/{s}/generator.safetensors",
                "models/{s}/split.json",
                "models/{s}/ruler",
                "data/{s}/validated",
                "data/{s}/augmented",
            ),
            params=("evaluation", "domain"),
        ),
    )
}
"""Every step, in an order that runs each after its inputs."""

ASSET_STEPS: dict[str, Step] = {s.name: s for s in STEPS.values() if s.asset}
"""The steps with a Dagster asset (all but ``params``)."""


def step(name: str) -> Step:
    try:
        return STEPS[name]
    except KeyError:
        raise ValueError(f"unknown step {name!r}; allowed: {list(STEPS)}") from None


# --------------------------------------------------------------------------- #
# Code closure: the project files a module runs, found statically.
# --------------------------------------------------------------------------- #
def _module_file(module: str, root: Path) -> Path | None:
    parts = module.split(".")
    if parts[0] not in CODE_PACKAGES:
        return None
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    for suffix in (".py", ".c"):  # a compiled module is code too: its C source (pipelines/_native.c)
        f = base.with_suffix(suffix)
        if f.is_file():
            return f
    return None


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    """``_EXPORTS = {"name": "module"}`` of a package that loads its names on first use
    (``gan_core/__init__.py``): what ``from package import name`` really imports."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            try:
                return dict(ast.literal_eval(node.value))
            except ValueError:
                return {}
    return {}


def _imports(module: str, path: Path, root: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for a in node.names:
                found.add(f"{target}.{a.name}")  # a submodule, if it is one
                init = _module_file(target, root)
                if init is not None and init.name == "__init__.py":
                    lazy = _lazy_exports(ast.parse(init.read_text(encoding="utf-8")))
                    if a.name in lazy:
                        found.add(f"{target}.{lazy[a.name].lstrip('.')}")
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    for name in list(found):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return found


@lru_cache(maxsize=None)
def _closure(module: str, root: Path) -> tuple[str, ...]:
    seen: dict[str, Path] = {}
    todo = [module]
    parts = module.split(".")
    todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        f = _module_file(m, root)
        if f is None:
            continue
        seen[m] = f
        if f.suffix == ".py":
            todo.extend(_imports(m, f, root))
    return tuple(sorted({f.relative_to(root).as_posix() for f in seen.values()}))


def code_closure(module: str, root: Path = PROJECT_ROOT) -> list[str]:
    """Project files (``pipelines/``, ``gan_core/``) that importing ``module`` and calling
    its functions can run: module- and function-level imports, package ``__init__`` files,
    and the names a lazy package maps to modules. Relative to ``root``, sorted."""
    return list(_closure(module, Path(root).resolve()))


# --------------------------------------------------------------------------- #
# dvc.yaml, generated
# --------------------------------------------------------------------------- #
DVC_YAML_HEADER = """\
# Generated from pipelines/registry.py by `scenario-gan dvc-yaml`: do not edit by hand
# (tests/test_registry.py fails when this file is not what the registry and the
# scenario files say). One chain per scenario:
#   params@<s> -> ingest@<s> -> validate@<s> -> augment@<s> / ruler@<s> -> train@<s> -> evaluate@<s>
#
#   .dvc-venv/bin/dvc repro --keep-going        # every scenario; only what changed reruns; a
#                                               # failing scenario stops only its own chain
#   .dvc-venv/bin/dvc repro evaluate@faces      # one scenario's chain
#   .dvc-venv/bin/dvc exp run -S 'scenarios/faces.yaml:gan.train.steps=300'
#
# Each stage runs `python -m pipelines.stage <step> <scenario>` (the same function the
# Dagster asset calls, on the same paths, under the same per-scenario lock) through
# `python -m assets.dvc_stage`, which imports Dagster while the step runs and then
# records the step in the Dagster instance (as `python -m assets.record` does). A stage
# depends on the whole import closure of its step and on the keys it reads of
# data/<s>/params.yaml (scenarios/_defaults.yaml under scenarios/<s>.yaml, resolved by
# params@<s>), so editing `gan:` in scenarios/faces.yaml reruns params@faces (cheap),
# train@faces and evaluate@faces, and nothing else.
#
# To add a scenario: write scenarios/<name>.yaml, then run `scenario-gan dvc-yaml`.
"""


def scenario_source(scenario: Any) -> str:
    """The path (relative to the project) that a scenario's ingestion reads: its raw
    folder or .npz file, or for a built-in source the code that builds the images."""
    if scenario.data.source == "builtin":
        return "pipelines/builtin_data.py"
    return f"data/{scenario.data.path or scenario.name + '/raw'}"


def dvc_yaml(scenarios: dict[str, str], *, python: str = ".venv/bin/python", root: Path = PROJECT_ROOT) -> str:
    """``dvc.yaml`` for ``scenarios`` (name -> :func:`scenario_source`)."""
    import yaml

    stages: dict[str, Any] = {}
    for s in STEPS.values():
        # data/<s>/params.yaml is a params file, not a dep: a stage reruns when one of its
        # keys changes, not whenever the file does (DVC still orders params@<s> first)
        deps = [*s.code_files(root), *s.extra_deps, *(p.replace("{s}", "${key}") for p in s.input_paths())]
        do: dict[str, Any] = {
            "desc": s.description,
            "cmd": f"${{python}} -m assets.dvc_stage {s.name} ${{key}}" if s.asset else f"${{python}} -m pipelines.stage {s.name} ${{key}}",
            "deps": deps,
        }
        params: list[Any] = []
        if s.params:
            params.append({PARAMS_FILE.replace("{s}", "${key}"): list(s.params)})
        if s.project_params:
            params.append({PROJECT_PARAMS_FILE: list(s.project_params)})
        if params:
            do["params"] = params
        for kind in ("outs", "metrics", "plots"):
            outs = [o for o in s.outputs if o.kind == kind]
            if outs:
                do[kind] = [{o.path.replace("{s}", "${key}"): dict(o.options)} if o.options else o.path.replace("{s}", "${key}") for o in outs]
        stages[s.name] = {"foreach": "${scenarios}", "do": do}
    doc = {"vars": [{"python": python}, {"scenarios": {n: {"source": src} for n, src in sorted(scenarios.items())}}], "stages": stages}
    return DVC_YAML_HEADER + "\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)


def project_dvc_yaml(root: Path = PROJECT_ROOT, scenarios_dir: Path | None = None, *, warn=None) -> str:
    """``dvc.yaml`` for every scenario file of the project at ``root``. A file that does
    not load still gets its chain (its ``params@`` stage fails with the error that names
    the file and the key, and ``dvc repro --keep-going`` goes on with the others); its
    source is read from the raw YAML where possible, and ``warn`` is told."""
    import yaml

    from pipelines.scenario import load_each, scenario_names

    directory = scenarios_dir or root / "scenarios"
    good, broken = load_each(directory)
    sources = {n: scenario_source(sc) for n, sc in good.items()}
    for name in scenario_names(directory):
        if name in sources:
            continue
        try:
            data = (yaml.safe_load((directory / f"{name}.yaml").read_text(encoding="utf-8")) or {}).get("data") or {}
            kind = data.get("source")
        except Exception:  # noqa: BLE001 - unreadable: the params stage says why
            data, kind = {}, None
        sources[name] = f"data/{data.get('path') or name + '/raw'}" if kind in ("folder", "npz") else "pipelines/builtin_data.py"
        if warn is not None:
            warn(f"warning: {broken.get(name, name)}\n  (listed anyway: its chain fails at params@{name} until the file is fixed)")
    return dvc_yaml(sources, root=root)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="scenario-gan dvc-yaml", description="Write dvc.yaml from the step registry and the scenario files.")
    p.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is not current, write nothing")
    p.add_argument("--base-dir", type=Path, default=PROJECT_ROOT)
    args = p.parse_args(argv)
    root = args.base_dir.resolve()
    text = project_dvc_yaml(root, warn=lambda m: print(m, file=sys.stderr))
    target = root / "dvc.yaml"
    current = target.read_text(encoding="utf-8") if target.is_file() else ""
    if args.check:
        if current != text:
            print(f"{target} is not what pipelines/registry.py and scenarios/ say; run `scenario-gan dvc-yaml`", file=sys.stderr)
            return 1
        print(f"{target} is current")
        return 0
    if current != text:
        tmp = target.with_name(".dvc.yaml.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        print(f"wrote {target}")
    else:
        print(f"{target} is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
