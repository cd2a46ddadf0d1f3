"""The package's layering: runtime/checks -> schedules/grids/converters -> solvers -> data/metrics/models
-> training/bench/demo -> cli/commands.

Every import in every module under cresshift/, lazy ones inside functions included, is parsed
with ``ast`` and checked: no module imports from a layer above its own, and ``cresshift.solvers``
imports nothing from models, data, metrics, training, bench or the CLI. The package root's lazy
facade (``cresshift/__init__.py``) sits on top; a bare ``import cresshift`` (for ``__version__``)
is allowed anywhere. A new module needs a line in ``LAYERS`` (a module inside a package listed
there, such as ``bench/report.py`` or ``training/checkpoint.py``, takes its package's layer).

A second check keeps ``_private`` names inside their module: no module imports a private name
from another cresshift module or calls ``obj._name()`` on anything but ``self`` / ``cls``.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cresshift"

# Part of cresshift (a top-level module or package, or a dotted submodule, most specific wins) -> layer.
LAYERS = {
    "runtime": 0, "checks": 0,
    "schedules": 1, "grids": 1, "converters": 1, "stats": 1,
    "solvers": 2,
    "data": 3, "metrics": 3, "models": 3, "weights": 3, "testing": 3,
    "training": 4, "bench": 4, "demo": 4,
    "cli": 5, "commands": 5, "training.cli": 5, "__main__": 5, "__init__": 5,
}
# Imports from above that are part of a contract, each with its reason.
ALLOWED = {
    ("grids", "solvers"): "cresshift.grids.optimize_grid (a contract name) re-exports the solvers' "
                          "optimiser lazily, through a module __getattr__",
}
SOLVERS_MAY_NOT = {"models", "data", "metrics", "training", "bench", "demo", "cli", "commands", "weights"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def dotted(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return list(rel.parts[:-1]) if rel.name == "__init__" and len(rel.parts) > 1 else list(rel.parts)


def layer_key(parts: list[str]) -> str:
    """The most specific LAYERS key for a module's dotted parts (KeyError if none)."""
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key
    raise KeyError(".".join(parts))


def imported(path: Path) -> set[tuple[str, ...]]:
    """Dotted cresshift modules ``path`` imports (absolute and relative, at any depth in the file)."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    package = list(rel.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name.split(".")[1:] for a in node.names if a.name.startswith("cresshift.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("cresshift."):
                    continue
                base = node.module.split(".")[1:]
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            targets = [base + [a.name] for a in node.names] if not node.module else [base]
        else:
            continue
        found |= {tuple(t) for t in targets if t}
    return found


def test_every_module_has_a_layer():
    missing = []
    for path in modules():
        try:
            layer_key(dotted(path))
        except KeyError:
            missing.append(str(path.relative_to(PACKAGE)))
    assert not missing, f"add these parts of cresshift to LAYERS in tests/test_layering.py: {missing}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_layer_above(path):
    own = layer_key(dotted(path))
    above = []
    for target in imported(path):
        key = layer_key(list(target))
        if LAYERS[key] > LAYERS[own] and (own.split(".")[0], key.split(".")[0]) not in ALLOWED:
            above.append(".".join(target))
    assert not above, f"{path.relative_to(PACKAGE)} (layer {LAYERS[own]}) imports from a layer above: {sorted(above)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "solvers").rglob("*.py")), ids=lambda p: p.name)
def test_solvers_import_no_application_code(path):
    bad = {t[0] for t in imported(path)} & SOLVERS_MAY_NOT
    assert not bad, f"cresshift/solvers/{path.name} imports {sorted(bad)}"


def test_a_violation_is_found(tmp_path):
    """The checker itself: a schedules module importing models is caught."""
    fake = PACKAGE / "schedules" / "_layering_probe.py"
    assert not fake.exists()
    fake.write_text("from ..models import pipeline\n", encoding="utf-8")
    try:
        with pytest.raises(AssertionError, match="imports from a layer above"):
            test_no_import_from_a_layer_above(fake)
    finally:
        fake.unlink()


# --- private names stay in their module ------------------------------------------------------------
def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_reaches(source: str) -> list[str]:
    """Where ``source`` reaches into another module's ``_private`` names.

    Flagged: ``from <cresshift module> import _name``; a call ``obj._name(...)`` on anything but
    ``self``, ``cls`` or ``super()``; and ``mod._name`` where ``mod`` is a name imported from
    cresshift. Privates of outside libraries (``torch._C``, ``sys._getframe``: the object's root
    is a module imported from outside cresshift) are allowed.
    """
    tree = ast.parse(source)
    ours: set[str] = set()      # names bound by importing from cresshift
    outside: set[str] = set()   # names bound by importing anything else
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = a.asname or a.name.split(".")[0]
                (ours if a.name.split(".")[0] == "cresshift" else outside).add(bound)
        elif isinstance(node, ast.ImportFrom):
            internal = node.level > 0 or (node.module or "").split(".")[0] == "cresshift"
            for a in node.names:
                (ours if internal else outside).add(a.asname or a.name)
                if internal and _private(a.name):
                    found.append(f"line {node.lineno}: imports {a.name} from {'.' * node.level}{node.module or ''}")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        root = node.value
        while isinstance(root, ast.Attribute):
            root = root.value
        root_name = root.id if isinstance(root, ast.Name) else None
        if root_name in outside:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ours:
            found.append(f"line {node.lineno}: {ast.unparse(node)} (a private name of an imported module)")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _private(node.func.attr)):
            continue
        obj = node.func.value
        root = obj
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(obj, ast.Name) and obj.id in ("self", "cls"):
            continue
        if isinstance(obj, ast.Call) and isinstance(obj.func, ast.Name) and obj.func.id == "super":
            continue
        if isinstance(root, ast.Name) and root.id in outside:
            continue
        found.append(f"line {node.lineno}: calls {ast.unparse(node.func)}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reaches_into_another_modules_private_names(path):
    found = private_reaches(path.read_text(encoding="utf-8"))
    assert not found, (f"{path.relative_to(PACKAGE)} uses private names of other modules or objects (make them "
                       f"public where they are shared): {found}")


def test_a_private_reach_is_found():
    """The checker itself: each kind of reach is caught, self/cls/super() and outside libraries are not."""
    assert private_reaches("from ..cli import _Log\n")
    assert private_reaches("from cresshift.bench import _fmt\n")
    assert private_reaches("def f(job):\n    job._finish('done')\n")
    assert private_reaches("from . import pipeline\nx = pipeline._decode\n")
    allowed = ("import torch\nimport sys\nfrom torch import nn\n"
               "class A(nn.Module):\n"
               "    def f(self):\n        self._g()\n        super()._h()\n        torch._C._set_x()\n"
               "        sys._getframe()\n        return nn._private_thing\n"
               "    @classmethod\n    def k(cls):\n        cls._g()\n")
    assert private_reaches(allowed) == []
