"""Rooms stay small enough to read: no class in kemi/ over 250 lines, no function over 60.

Measured from the source with ast (decorators excluded, docstrings and comments included).
"""

from __future__ import annotations

import ast

from kemi.paths import ROOT

MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60


def oversized(source: str, path: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, path)):
        lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
            found.append(f"{path}:{node.lineno}: class {node.name} has {lines} lines (at most {MAX_CLASS_LINES})")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines > MAX_FUNCTION_LINES:
            found.append(f"{path}:{node.lineno}: {node.name}() has {lines} lines (at most {MAX_FUNCTION_LINES})")
    return found


def test_no_class_or_function_in_kemi_is_too_long():
    problems = []
    for path in sorted((ROOT / "kemi").rglob("*.py")):
        problems += oversized(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert problems == []


def test_the_check_sees_a_long_function_and_a_long_class():
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    assert oversized(f"def f():\n{body}\n", "f.py") == ["f.py:1: f() has 62 lines (at most 60)"]
    methods = "\n".join(f"    def m{i}(self):\n        return {i}\n" for i in range(84))
    assert oversized(f"class C:\n{methods}", "c.py")[0].startswith("c.py:1: class C has 2")
