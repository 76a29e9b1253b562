"""The package's shape: layers that import only downwards, a pure core, no cycles, a
tested public API, and modules and classes of a readable size."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import sqlrepl

PACKAGE = Path(sqlrepl.__file__).parent
#: Rank of each layer: a module may import only from its own layer or lower ones.
LAYERS = {"errors": 0, "config": 0, "core": 1, "coord": 2, "node": 3}
TOP = 4  # cli, admin, backup, demo, render, logs, sample, __init__, __main__
#: What the pure core may not import: no event loop, HTTP, coordination client, file
#: watching, threads or clocks it cannot be handed.
NOT_IN_CORE = {"asyncio", "aiohttp", "etcd3gw", "watchdog", "threading", "time", "concurrent"}


@functools.cache  # the tree does not change during a run: walked and parsed once
def modules() -> dict[str, Path]:
    """Dotted names below sqlrepl (a package by its own name; sqlrepl itself "__init__")."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer(module: str) -> int:
    return LAYERS.get(module.split(".")[0], TOP)


def _targets(module: str, node: ast.ImportFrom) -> list[str]:
    """The sqlrepl modules a `from … import …` names: the module, or its submodules."""
    if node.level:
        parts = [] if module == "__init__" else module.split(".")
        is_pkg = modules()[module].name == "__init__.py"
        base = parts if is_pkg else parts[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        target = str(node.module).removeprefix("sqlrepl").lstrip(".")
    known = modules()
    found = [f"{target}.{a.name}".lstrip(".") for a in node.names]
    found = [m for m in found if m in known]
    if len(found) < len(node.names):
        found.append(target if target in known else "__init__")
    return found


@functools.cache
def imports(module: str) -> tuple[set[str], set[str]]:
    """(sqlrepl modules, third-party/stdlib top-level names) that `module` imports, also
    under `if TYPE_CHECKING:` (a circle hidden from Python is still one for a reader)."""
    tree = ast.parse(modules()[module].read_text())
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or str(node.module).startswith("sqlrepl")
        ):
            ours.update(_targets(module, node))
        elif isinstance(node, ast.ImportFrom):
            theirs.add(str(node.module).split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(a.name.split(".")[0] for a in node.names)
    ours.discard(module)
    return ours, theirs


def test_imports_only_go_down() -> None:
    """No module imports from a layer above its own."""
    bad = [
        f"{m} -> {dep}"
        for m in modules()
        for dep in imports(m)[0]
        if layer(dep) > layer(m) and dep != "__init__"
    ]
    assert not bad, bad


def test_core_is_pure() -> None:
    """core/ uses apsw and plain values only: no event loop, HTTP, etcd, watchdog, threads,
    or clocks; and nothing from the layers above it."""
    for m in (m for m in modules() if m.startswith("core")):
        ours, theirs = imports(m)
        assert not (theirs & NOT_IN_CORE), f"{m} imports {theirs & NOT_IN_CORE}"
        assert all(layer(dep) <= 1 for dep in ours), f"{m} imports {ours}"


def test_no_import_cycles() -> None:
    """The module graph (run-time imports) has no cycle."""
    graph = {m: {d for d in imports(m)[0] if d != m} for m in modules()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in graph[m]:
            assert state.get(dep) != 1, "cycle: " + " -> ".join([*path, m, dep])
            if dep not in state:
                visit(dep, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def _methods(cls: ast.ClassDef) -> list[str]:
    """A class's methods: its functions but properties and dunders (`__init__`)."""
    return [
        n.name
        for n in cls.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        and not n.name.startswith("__")
        and not any(ast.unparse(d) == "property" for d in n.decorator_list)
    ]


def _own_attributes(cls: ast.ClassDef) -> set[str]:
    """The attributes a class's methods set on `self`."""
    return {
        target.attr
        for node in ast.walk(cls)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for top in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for target in ast.walk(top)
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }


def test_readable_sizes() -> None:
    """Modules of 300 lines at most, classes of 12 methods at most, and the two roles of
    12 attributes at most (components own the rest of their state)."""
    for name, path in modules().items():
        text = path.read_text()
        assert text.count("\n") <= 300, f"{name} has {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                methods = _methods(node)
                assert len(methods) <= 12, f"{name}.{node.name} has {len(methods)} methods"
                if node.name in ("Leader", "Follower"):
                    attributes = _own_attributes(node)
                    assert len(attributes) <= 12, f"{node.name}: {sorted(attributes)}"


#: Names that hold third-party objects a module may set attributes of (an aiohttp
#: response, an ssl context, a rich table, an http.client connection).
THIRD_PARTY = {
    "asking": {"http_conn"},
    "config": {"context"},
    "node.leader.batches": {"response"},
    "node.snapshots": {"response"},
    "render": {"table", "shown"},
}


def test_nobody_assigns_another_objects_attributes() -> None:
    """`x.attr = …` only where x is `self` (or reached through it: a component's own
    parts); others ask the owner or call its methods. Third-party objects excepted."""
    bad = []
    for name, path in modules().items():
        allowed = THIRD_PARTY.get(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in (t for top in targets for t in ast.walk(top)):
                if not isinstance(target, ast.Attribute) or not isinstance(target.ctx, ast.Store):
                    continue
                root = target.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                owner = root.id if isinstance(root, ast.Name) else ast.unparse(root)
                if owner not in ("self", "cls") and owner not in allowed:
                    bad.append(f"{name}:{node.lineno}: {ast.unparse(target)} = …")
    assert not bad, bad


def test_public_api() -> None:
    """`sqlrepl.__all__` names exactly what the package exports, each importable."""
    assert sorted(sqlrepl.__all__) == sorted(set(sqlrepl.__all__))
    for name in sqlrepl.__all__:
        assert getattr(sqlrepl, name) is not None
    assert issubclass(sqlrepl.ConfigError, sqlrepl.SqlreplError)
    assert sqlrepl.Position(2, 5) > sqlrepl.Position(1, 9)
    assert sqlrepl.__version__ and sqlrepl.__version__ != "0+unknown"
    assert (PACKAGE / "py.typed").exists()
