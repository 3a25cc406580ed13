"""The house rules of ARCHITECTURE.md, read from the source with ``ast``.

Nothing is imported or run: every ``import`` and ``from ... import``
statement of ``napari_medcnn`` (at module level or inside functions; a lazy
import is still an arrow) becomes an edge between modules.  The checks:

* no import cycle, except inside a plugin registry (a folder holding
  ``registry.py`` or ``base.py`` whose modules register themselves);
* no private name (``_x``) imported from another module;
* no arrow from a lower layer up to a higher one (:data:`LAYERS`);
* the core imports no Qt, napari or magicgui;
* at most 6 modules at the package root.

Each checker is also run on a small made-up package with one defect each,
so a check that could never fail would show here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "napari_medcnn"

#: top-level parts of the package, lowest first; a part may import its own
#: layer or lower ones only.  (The root's ``__init__`` holds the version.)
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"", "_atomic", "_progress", "config"}),
    frozenset({"io"}),
    frozenset({"deid", "models"}),
    frozenset({"pacs"}),
    frozenset({"preprocessing"}),
    frozenset({"trust"}),
    frozenset({"inference"}),
    frozenset({"saliency", "training"}),
    frozenset({"cohort", "export"}),
    frozenset({"cli", "widgets", "_reader", "_sample_data"}),
)
#: parts that must not import a GUI toolkit
CORE = {
    "",
    "_atomic",
    "_progress",
    "config",
    "io",
    "deid",
    "models",
    "pacs",
    "preprocessing",
    "trust",
    "inference",
    "saliency",
    "training",
    "cohort",
    "export",
}
GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")
MAX_ROOT_MODULES = 6


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_graph(root: Path):
    """(modules, edges {module: {imported module}}, private imports,
    external top-level imports {module: {name}}) of the package at ``root``."""
    mods = {module_name(root, p): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    external: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for m, p in mods.items():
        is_pkg = p.name == "__init__.py"
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    targets.append((sub, None) if sub in mods else (src, a.name))
            for target, name in targets:
                if target in mods:
                    if target != m:
                        edges[m].add(target)
                        if name and name.startswith("_") and not name.startswith("__"):
                            private.append(f"{m} imports {name} from {target}")
                elif not target.startswith(root.name):
                    external[m].add(target.split(".")[0])
    return mods, edges, private, external


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def is_registry(comp: list[str]) -> bool:
    """A cycle inside one folder that holds a registry.py or base.py."""
    folders = {c.rsplit(".", 1)[0] for c in comp}
    names = {c.rsplit(".", 1)[1] for c in comp}
    return len(folders) == 1 and bool(names & {"registry", "base"})


def part(module: str) -> str:
    """The top-level part of a module: ``io`` for ``pkg.io.dicom.find``."""
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else ""


def layer_of(name: str) -> int:
    for k, members in enumerate(LAYERS):
        if name in members:
            return k
    raise KeyError(name)


def problems(root: Path) -> dict[str, list[str]]:
    """Every broken rule of the package at ``root``, by rule."""
    mods, edges, private, external = read_graph(root)
    found: dict[str, list[str]] = {
        "cycles": [" <-> ".join(c) for c in cycles(edges) if not is_registry(c)],
        "private": private,
        "upward": [],
        "unknown part": [],
        "gui in core": [],
        "root modules": [],
    }
    for m, targets in edges.items():
        try:
            here = layer_of(part(m))
        except KeyError:
            found["unknown part"].append(m)
            continue
        for t in targets:
            if t in mods and layer_of(part(t)) > here:
                found["upward"].append(f"{m} -> {t}")
    for m, names in external.items():
        if part(m) in CORE and names & set(GUI):
            found["gui in core"].append(f"{m}: {sorted(names & set(GUI))}")
    root_mods = sorted(p.name for p in root.glob("*.py") if p.name != "__init__.py")
    if len(root_mods) > MAX_ROOT_MODULES:
        found["root modules"] = root_mods
    return found


def test_the_package_keeps_the_house_rules():
    found = problems(PACKAGE)
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    parts = {
        p
        for p in parts
        if (PACKAGE / p).is_dir() and (PACKAGE / p / "__init__.py").exists()
    } | {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for name in parts:
        layer_of(name)  # KeyError names a new part without a layer


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "napari_medcnn"
    for rel, text in files.items():
        f = pkg / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return pkg


@pytest.mark.parametrize(
    ("rule", "files"),
    [
        (
            "cycles",
            {
                "io/a.py": "from napari_medcnn.io import b\n",
                "io/b.py": "import napari_medcnn.io.a\n",
            },
        ),
        ("private", {"io/a.py": "def _x(): pass\n", "io/b.py": "from .a import _x\n"}),
        (
            "upward",
            {
                "io/a.py": "def f():\n    from napari_medcnn.inference import c\n",
                "inference/c.py": "",
            },
        ),
        (
            "gui in core",
            {"models/m.py": "def f():\n    from qtpy.QtWidgets import QWidget\n"},
        ),
        ("root modules", {f"m{k}.py": "" for k in range(7)}),
        ("unknown part", {"newpart/x.py": ""}),
    ],
)
def test_each_rule_catches_its_defect(tmp_path, rule, files):
    base = {
        "__init__.py": "",
        "io/__init__.py": "",
        "inference/__init__.py": "",
        "models/__init__.py": "",
    }
    if rule == "root modules":
        global LAYERS
        saved = LAYERS
        LAYERS = (*saved, frozenset(f"m{k}" for k in range(7)))
    try:
        found = problems(_write(tmp_path, {**base, **files}))
    finally:
        if rule == "root modules":
            LAYERS = saved
    assert found[rule], found
    assert not any(v for k, v in found.items() if k != rule), found


def test_a_registry_cycle_is_allowed(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "",
            "models/registry.py": (
                "def load():\n    from napari_medcnn.models import net\n"
            ),
            "models/net.py": "from napari_medcnn.models.registry import load\n",
        },
    )
    assert problems(pkg)["cycles"] == []
