"""Who imports what inside kemi/, read from the source with ast (nothing is imported).

KSR (Kamailio) only in the SIP shell, redis only in the store, the pure modules
neither (nor anything of the store), and no import cycle between kemi modules.
Function-level imports count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import re

import pytest

from kemi.paths import ROOT

# Paths relative to the checkout; '*' is any part of a file or directory name, '**/' any directories.
KSR_MAY_BE_IMPORTED_BY = ("kemi/sip/shell.py",)
REDIS_MAY_BE_IMPORTED_BY = ("kemi/store/**/*.py",)
PURE = ("kemi/numbering.py", "kemi/money.py", "kemi/routing.py", "kemi/edge.py", "kemi/records.py",
        "kemi/model.py", "kemi/provisioning.py", "kemi/replies.py", "kemi/settings.py", "kemi/paths.py",
        "kemi/cli_errors.py", "kemi/metrics.py")
STORE = "kemi.store"


def matches(path: str, pattern: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\*/", "(?:[^/]+/)*").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, path) is not None


def module_name(path: str) -> str:
    """'kemi/store/__init__.py' -> 'kemi.store', 'kemi/store/keys.py' -> 'kemi.store.keys'."""
    parts = path[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: str, source: str, known: set[str]) -> list[tuple[str, int]]:
    """(module, line) of every import in the file. `from P import n` names P.n when that is a
    module of `known` (a submodule), else P; relative imports are resolved against the package."""
    package = module_name(path) if path.endswith("__init__.py") else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
    return found


def violations(sources: dict[str, str]) -> list[str]:
    """Every broken rule in {path: source} of kemi/'s modules, as 'path:line: what'."""
    known = {module_name(p) for p in sources}
    problems = []
    graph: dict[str, set[str]] = {module_name(p): set() for p in sources}
    for path, source in sources.items():
        for target, line in imports(path, source, known):
            top = target.split(".")[0]
            where = f"{path}:{line}"
            if top == "KSR" and not any(matches(path, p) for p in KSR_MAY_BE_IMPORTED_BY):
                problems.append(f"{where}: imports KSR outside the SIP shell")
            if top == "redis" and not any(matches(path, p) for p in REDIS_MAY_BE_IMPORTED_BY):
                problems.append(f"{where}: imports redis outside kemi/store/")
            if path in PURE and (target == STORE or target.startswith(STORE + ".")):
                problems.append(f"{where}: pure module imports {target}")
            if target in known and target != module_name(path):
                graph[module_name(path)].add(target)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan), as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(closed_path(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path inside a strongly connected component from its first member back to itself."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def kemi_sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted((ROOT / "kemi").rglob("*.py"))}


def test_kemi_keeps_its_boundaries():
    assert violations(kemi_sources()) == []


def test_the_tables_name_modules_that_exist():
    paths = set(kemi_sources())
    assert set(PURE) <= paths, "a pure module was renamed: update PURE"
    assert any(matches(p, pattern) for p in paths for pattern in KSR_MAY_BE_IMPORTED_BY), "no SIP shell found"
    assert any(matches(p, pattern) for p in paths for pattern in REDIS_MAY_BE_IMPORTED_BY), "no store found"
    # the rules really see the imports they forbid elsewhere
    found = {path: {t for t, _ in imports(path, src, set())} for path, src in kemi_sources().items()}
    assert any("KSR" in names for names in found.values()) and any("redis" in names for names in found.values())


@pytest.mark.parametrize("path, source, expected", [
    ("kemi/routing.py", "import KSR\n", "kemi/routing.py:1: imports KSR outside the SIP shell"),
    ("kemi/sip/routes.py", "def f():\n    import KSR\n", "kemi/sip/routes.py:2: imports KSR outside the SIP shell"),
    ("kemi/sip/phones.py", "import KSR\n", "kemi/sip/phones.py:1: imports KSR outside the SIP shell"),
    ("kemi/sip/calls.py", "import redis\n", "kemi/sip/calls.py:1: imports redis outside kemi/store/"),
    ("kemi/admin.py", "from redis import exceptions\n", "kemi/admin.py:1: imports redis outside kemi/store/"),
    ("kemi/money.py", "import redis.client\n", "kemi/money.py:1: imports redis outside kemi/store/"),
    ("kemi/records.py", "from kemi.store.prepaid import Keys\n",
     "kemi/records.py:1: pure module imports kemi.store.prepaid"),
    ("kemi/model.py", "from kemi import store\n", "kemi/model.py:1: pure module imports kemi.store"),
    ("kemi/settings.py", "def f():\n    from kemi.store import Connection\n",
     "kemi/settings.py:2: pure module imports kemi.store"),
])
def test_a_forbidden_import_is_reported(path, source, expected):
    sources = {**kemi_sources(), path: source}
    assert expected in violations(sources)


@pytest.mark.parametrize("path, source", [
    ("kemi/sip/shell.py", "import KSR\n"),
    ("kemi/store/cache.py", "import redis\n"),
])
def test_the_allowed_places_may_import_them(path, source):
    assert violations({**kemi_sources(), path: source}) == []


def test_an_import_cycle_is_reported_even_through_a_lazy_import():
    sources = kemi_sources()
    sources["kemi/money.py"] += "\n\ndef _late():\n    from kemi import admin_prepaid\n"
    assert any(v.startswith("import cycle: ") and "kemi.money" in v and "kemi.admin_prepaid" in v
               for v in violations(sources))
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_submodule_imports_resolve():
    known = {"kemi", "kemi.store", "kemi.store.keys", "kemi.store.connection", "kemi.model"}
    assert imports("kemi/store/connection.py", "from . import keys\nfrom .keys import x\nfrom ..model import M\n",
                   known) == [("kemi.store.keys", 1), ("kemi.store.keys", 2), ("kemi.model", 3)]
    assert imports("kemi/store/__init__.py", "from .connection import C\n", known) == [("kemi.store.connection", 1)]
