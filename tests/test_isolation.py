"""The layers: gan_core is pure PyTorch (it never imports the orchestration or data-quality stack); the domain layer (pipelines/) imports no Dagster; nothing imports upward, and no modules import each other in a cycle."""

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("dagster", "dvc", "great_expectations", "albumentations")
GAN_CORE = Path(__file__).resolve().parents[1] / "gan_core"


def test_no_forbidden_import_statements():
    offenders = []
    for path in GAN_CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders


def test_importing_every_module_loads_none_of_them():
    modules = sorted(p.stem for p in GAN_CORE.glob("*.py") if p.stem != "__init__")
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module('gan_core.' + m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert len(modules) >= 8


def _gan_core_import_graph() -> dict[str, set[str]]:
    """gan_core module -> the gan_core modules it imports, read statically (every
    ``import``/``from ... import`` anywhere in the file: module level, in functions,
    under ``if TYPE_CHECKING``; relative or absolute)."""
    modules = {p.stem for p in GAN_CORE.glob("*.py")}

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        if parts[0] != "gan_core":
            return None
        if len(parts) == 1:
            return "__init__"
        return parts[1] if parts[1] in modules else None

    graph: dict[str, set[str]] = {}
    for path in sorted(GAN_CORE.glob("*.py")):
        me = path.stem
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name}: import from above gan_core"
                base = ("gan_core" + (f".{node.module}" if node.module else "")) if node.level else (node.module or "")
                if base == "gan_core":  # `from . import x` / `from gan_core import x`: x may be a module
                    targets |= {a.name if a.name in modules else "__init__" for a in node.names}
                else:
                    targets.add(resolve(base))
        graph[me] = {t for t in targets if t is not None and t != me}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_gan_core_has_no_import_cycles():
    graph = _gan_core_import_graph()
    assert graph["quality"] >= {"fid", "manifold"}  # the graph sees relative imports
    assert "symmetry" in graph["privacy"]  # ... and those inside functions
    cycle = _find_cycle(graph)
    assert cycle is None, "gan_core modules import each other: " + " -> ".join(f"gan_core.{m}" for m in cycle)


def test_the_cycle_check_reports_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


# --------------------------------------------------------------------------- #
# The layers: gan_core (pure PyTorch) <- pipelines (the domain: scenarios, steps, locks,
# DVC, lineage, model card, the stage command; no Dagster) <- assets (the Dagster layer).
# --------------------------------------------------------------------------- #
ROOT = GAN_CORE.parent
LAYERS = {"gan_core": 0, "pipelines": 1, "assets": 2}
THIRD_PARTY_ABOVE = {"dagster": 2, "dagster_webserver": 2, "dvc": 3}  # dvc: never imported, it lives in .dvc-venv


def _project_import_graph() -> dict[str, set[str]]:
    """Every project module -> every name it imports (module level and inside functions,
    relative imports resolved), statically."""
    from pipelines.registry import _imports

    graph = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            graph[module] = _imports(module, path, ROOT)
    return graph


def _layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, names in graph.items():
        mine = LAYERS[module.split(".")[0]]
        for name in names:
            top = name.split(".")[0]
            level = LAYERS.get(top, THIRD_PARTY_ABOVE.get(top))
            if level is not None and level > mine:
                bad.append(f"{module} imports {name}")
    return sorted(set(bad))


def test_each_layer_imports_only_the_layers_below_it():
    graph = _project_import_graph()
    assert {"pipelines.stage", "pipelines.registry", "assets.definitions", "assets.record"} <= set(graph)
    assert "dagster" in graph["assets.common"] and "pipelines.registry" in graph["assets.common"]  # the graph sees imports
    assert _layer_violations(graph) == []


def test_the_layer_rule_catches_an_upward_import():
    assert _layer_violations({"pipelines.x": {"dagster"}, "gan_core.y": {"pipelines.scenario"}, "assets.z": {"pipelines.stage", "gan_core"}}) == [
        "gan_core.y imports pipelines.scenario",
        "pipelines.x imports dagster",
    ]


def test_pipelines_modules_do_not_import_each_other_in_a_cycle():
    graph = _project_import_graph()
    modules = {m for m in graph if m.startswith("pipelines.")}
    local = {m: {n for n in graph[m] if n in modules and n != m} for m in modules}
    cycle = _find_cycle(local)
    assert cycle is None, " -> ".join(cycle)


def test_importing_every_domain_module_loads_no_dagster():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "pipelines").rglob("*.py") if p.name != "__init__.py")
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'assets', 'dagster_webserver')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    assert len(modules) >= 15
