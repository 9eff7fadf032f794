"""aptune's modules are strictly layered: a module imports only from its own layer or below.

Every ``import`` statement counts, at module level and inside functions alike (a lazy import still makes
the lower layer depend on the upper one, and only hides the import cycle it would cause). The export file
``modeling_aptune.py`` is loaded where aptune is not installed, so it and the stand-ins it inlines are
checked on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aptune"

# Lowest first. A unit is a top-level module or subpackage of aptune; "__init__" is the package itself.
LAYERS = [
    ("allocator",),
    ("models", "families", "provenance", "configs"),
    ("adapters",),
    ("structures",),
    ("export", "salience", "search"),
    ("tuning", "distill"),
    ("model",),
    ("config",),
    ("method", "data"),
    ("eval",),
    ("train", "integrations", "bench"),
    ("ablation", "peers"),
    ("commands",),
    ("cli", "__main__", "__init__"),
]
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}

# Upward imports in code owned elsewhere, each with what it needs; an entry that no longer occurs fails
# the test, so this list only shrinks.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}  # (importer, imported) -> why it is tolerated for now

EXPORT_FILE = "aptune.export.modeling_aptune"
STANDINS = "aptune.structures.standins"  # inlined into the export file, so it may import only torch


# ------------------------------------------------------------------------------------ reading imports


def import_statements(tree: ast.AST) -> list[tuple[str, list[str], int, int]]:
    """(module, imported names, relative level, line) of every import anywhere in ``tree``;
    ``import a.b`` gives ("a.b", [], 0, line)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], 0, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [alias.name for alias in node.names], node.level, node.lineno))
    return found


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def exists(module: str, root: Path) -> bool:
    path = root.parent / module.replace(".", "/")
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[str, int]]:
    """Every module of the package at ``root`` that ``path`` imports, with the line of the import.

    ``from aptune.x import name`` names the submodule ``aptune.x.name`` where that exists, else ``aptune.x``."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for base, names, level, line in import_statements(ast.parse(path.read_text(), filename=str(path))):
        if level:  # relative: resolve against the importing module's package
            anchor = package.split(".")[: len(package.split(".")) - level + 1]
            base = ".".join(anchor + ([base] if base else []))
        for name in names or [None]:
            submodule = f"{base}.{name}" if name else base
            found.append((submodule if exists(submodule, root) else base, line))
    return [(name, line) for name, line in found if name == root.name or name.startswith(root.name + ".")]


def all_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(root: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of a higher layer in the package at ``root``."""
    found = []
    for module, path in all_modules(root).items():
        level = LAYER_OF[unit_of(module)]
        found += [(module, imported, line) for imported, line in imported_modules(path, root)
                  if LAYER_OF[unit_of(imported)] > level]
    return found


def describe(module: str) -> str:
    unit = unit_of(module)
    return f"{module} (layer {LAYER_OF[unit]}: {unit})"


# --------------------------------------------------------------------------------------------- tests


def test_every_unit_has_a_layer():
    units = {unit_of(module) for module in all_modules()}
    missing = sorted(units - set(LAYER_OF))
    assert not missing, f"aptune units without a layer: {missing}; add each to LAYERS in {Path(__file__).name}"


def test_modules_import_only_their_own_layer_or_below():
    found = upward_imports()
    new = [v for v in found if v[:2] not in KNOWN_VIOLATIONS]
    assert not new, "upward imports (a module may import only from its own layer or below; move the shared " \
        "code down, or the importing code up):\n" + "\n".join(
            f"  {describe(importer)} imports {describe(imported)}, line {line}" for importer, imported, line in new)
    stale = sorted(set(KNOWN_VIOLATIONS) - {v[:2] for v in found})
    assert not stale, f"fixed, so remove from KNOWN_VIOLATIONS: {stale}"


def test_the_check_sees_lazy_relative_and_from_package_imports(tmp_path):
    root = tmp_path / "aptune"
    for folder in ("structures", "eval", "data"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "eval" / "metrics.py").write_text("")
    (root / "structures" / "lazy.py").write_text("def f():\n    from aptune.eval import metrics\n")
    (root / "data" / "relative.py").write_text("from ..eval.metrics import compute_metrics\n")
    (root / "data" / "fine.py").write_text("import aptune.structures.lazy\nfrom . import relative\n")
    assert sorted(upward_imports(root)) == [("aptune.data.relative", "aptune.eval.metrics", 1),
                                            ("aptune.structures.lazy", "aptune.eval.metrics", 2)]


def test_the_core_does_not_import_the_export_file():
    """Layers 0-7 (everything below eval) use aptune.structures.standins, never the export file; only the
    export package itself, which writes the file into export folders, reads it."""
    core = LAYER_OF["data"]
    offenders = [
        f"  {describe(module)}, line {line}"
        for module, path in all_modules().items()
        if LAYER_OF[unit_of(module)] <= core and unit_of(module) != "export"
        for imported, line in imported_modules(path)
        if imported == EXPORT_FILE
    ]
    assert not offenders, f"import {EXPORT_FILE} (use {STANDINS} instead):\n" + "\n".join(offenders)


def test_the_export_file_imports_from_aptune_only_the_standins_it_inlines():
    modules = all_modules()
    assert {name for name, _ in imported_modules(modules[EXPORT_FILE])} == {STANDINS}
    standins_roots = {module.split(".")[0] for module, *_ in import_statements(ast.parse(modules[STANDINS].read_text()))}
    assert standins_roots <= {"__future__", "torch"}, f"{STANDINS} may import only torch, not {standins_roots}"


def test_the_export_folders_copy_is_self_contained():
    from aptune.export.hf import modeling_source

    source = modeling_source()
    compile(source, "modeling_aptune.py", "exec")  # a future import below the top would be a SyntaxError
    tree = ast.parse(source)
    roots = {module.split(".")[0] for module, *_ in import_statements(tree)}
    assert roots <= {"__future__", "torch", "transformers"}, roots
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert {"set_submodule", "empty_attention", "install_t5_bias_slicing", "apply_structure"} <= defined
