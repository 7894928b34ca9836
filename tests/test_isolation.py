"""gan_core is pure PyTorch: it never imports the orchestration or data-quality stack."""

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
