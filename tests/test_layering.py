"""The package's layering (design: schedules/grids/converters -> solvers -> models -> training/bench -> cli).

Every import in every module under cresshift/, lazy ones inside functions included, is parsed
with ``ast`` and checked: no module imports from a layer above its own, and ``cresshift.solvers``
imports nothing from models, data, training, bench or the CLI. The package root's lazy
facade (``cresshift/__init__.py``) sits on top; a bare ``import cresshift`` (for
``__version__``) is allowed anywhere.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cresshift"

# Top-level part of cresshift -> layer (higher may import lower or equal, never higher).
LAYERS = {
    "schedules": 0, "grids": 0, "converters": 0, "data": 0, "metrics": 0, "runtime": 0,
    "solvers": 1, "testing": 1,
    "models": 2,
    "training": 3, "bench": 3,
    "cli": 4, "commands": 4, "__main__": 4, "__init__": 4,
}
SOLVERS_MAY_NOT = {"models", "data", "training", "bench", "cli", "commands"}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def imported_parts(path: Path) -> set[str]:
    """Top-level cresshift parts ``path`` imports (absolute and relative, at any depth in the file)."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    package = list(rel.parts[:-1])
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            else:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                mod = base + (node.module.split(".") if node.module else [])
                if not mod:  # ``from . import x`` at the package root
                    parts.update(a.name for a in node.names)
                    continue
                parts.add(mod[0])
                continue
        else:
            continue
        for name in names:
            bits = name.split(".")
            if bits[0] == "cresshift" and len(bits) > 1:
                parts.add(bits[1])
            # a bare ``import cresshift`` reaches only the lazy root (``__version__``): allowed anywhere
    return parts


def test_every_module_has_a_layer():
    unknown = sorted({part_of(p) for p in modules()} - set(LAYERS))
    assert not unknown, f"add these parts of cresshift to LAYERS in tests/test_layering.py: {unknown}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_layer_above(path):
    own = part_of(path)
    above = {part for part in imported_parts(path) - {own} if LAYERS.get(part, 99) > LAYERS[own]}
    assert not above, f"{path.relative_to(PACKAGE)} (layer {LAYERS[own]}) imports from a layer above: {sorted(above)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "solvers").rglob("*.py")), ids=lambda p: p.name)
def test_solvers_import_no_application_code(path):
    bad = imported_parts(path) & SOLVERS_MAY_NOT
    assert not bad, f"cresshift/solvers/{path.name} imports {sorted(bad)}"


def test_the_parser_sees_relative_and_lazy_imports():
    # The checker itself: a relative import two levels up and one inside a function are both found.
    assert {"schedules", "converters"} <= imported_parts(PACKAGE / "solvers" / "exponential.py")
    assert "models" in imported_parts(PACKAGE / "__init__.py")
    assert "data" in imported_parts(PACKAGE / "testing.py")
