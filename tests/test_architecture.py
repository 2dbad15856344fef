"""The package's shape: imports point one way, `__init__` files only re-export, no module reaches into
another's private names, and the old import paths still lead somewhere."""
from __future__ import annotations

import ast
import importlib
import json
import pathlib
import subprocess
import sys
import warnings

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "convnet"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def owner(name: str) -> str | None:
    """The module that `name` (a module or a name inside one) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: pathlib.Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every convnet import, inside functions too, outside
    TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree)
               if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for node in ast.walk(block)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "convnet"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] == "convnet":
                found += [(base, alias.name) for alias in node.names]
    return found


def dependency_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            continue  # a package's re-exports are not a dependency of its modules
        for module, imported in imports(path):
            target = owner(f"{module}.{imported}") if imported and f"{module}.{imported}" in MODULES else owner(module)
            if target and target != name and MODULES[target].name != "__init__.py":
                graph[name].add(target)
    return graph


def test_no_import_cycles_even_through_imports_inside_functions():
    graph = dependency_graph()
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*trail[trail.index(nxt):], node, nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_init_files_only_re_export_and_declare_all():
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        assert "__all__" in {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                             for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                             if isinstance(target, ast.Name)}, name
        classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
        functions = [node.name for node in tree.body
                     if isinstance(node, ast.FunctionDef) and node.name not in ("__getattr__", "__dir__")]
        assert classes == [] and functions == [], f"{name} defines {classes + functions}; define them in a module"


def test_no_module_imports_another_modules_private_names():
    offences = []
    for name, path in MODULES.items():
        for module, imported in imports(path):
            if imported and imported.startswith("_") and not imported.startswith("__") and owner(module) != name:
                offences.append(f"{name} imports {module}.{imported}")
    assert offences == []


def test_no_module_reads_a_private_attribute_of_another_convnet_module():
    """`explain_module._check_model(...)`: an attribute with one underscore read from an imported convnet
    module (self._x and cls._x are a class's own business)."""
    offences = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("convnet")):
                aliases |= {alias.asname or alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {alias.asname or alias.name for alias in node.names if alias.name.startswith("convnet")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offences.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert offences == []


def test_old_import_paths_still_work_and_name_the_new_one():
    from convnet._internal.moved import MOVED
    code = ("import importlib, json, warnings\n"
            "said = {}\n"
            f"for old in {sorted(MOVED)!r}:\n"
            "    with warnings.catch_warnings(record=True) as caught:\n"
            "        warnings.simplefilter('always')\n"
            "        module = importlib.import_module(old)\n"
            "    said[old] = [module.__spec__.name, [str(w.message) for w in caught if w.category is DeprecationWarning]]\n"
            "print(json.dumps(said))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    said = json.loads(out)
    assert said == {old: [new, [f"{old} moved to {new}; import it from there"]] for old, new in MOVED.items()}


def test_inspection_shortcuts_work_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import convnet
        import convnet.explain
        from convnet import viz
        assert viz is importlib.import_module("convnet.inspection.viz")
        assert convnet.explain is importlib.import_module("convnet.inspection.explain")
        assert convnet.explain.__spec__.name == "convnet.inspection.explain"
