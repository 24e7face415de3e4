"""The table of answers the proxy gives by itself (kemi/replies.py): the only one, nothing in it unused."""

from __future__ import annotations

import ast

import pytest

from kemi import replies
from kemi.paths import ROOT
from kemi.replies import Reply

KEMI = ROOT / "kemi"
TABLE = KEMI / "replies.py"


def parsed() -> dict:
    return {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in sorted(KEMI.rglob("*.py"))}


def test_no_module_but_replies_defines_a_reply_constant():
    elsewhere = []
    for path, tree in parsed().items():
        if path == TABLE:
            continue
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) == "Reply":
                elsewhere.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert elsewhere == [], "Reply constants belong in kemi/replies.py"


def test_every_reply_in_the_table_is_given_somewhere():
    used = set()
    for path, tree in parsed().items():
        if path == TABLE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "replies":
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == "kemi.replies":
                used.update(alias.name for alias in node.names)
    table = {name for name, value in vars(replies).items() if isinstance(value, Reply)}
    assert table, "kemi.replies defines no Reply"
    assert table - used == set(), "answers nothing gives: remove them or use them"


def test_reasons_are_one_line_and_codes_final():
    for name, value in vars(replies).items():
        if isinstance(value, Reply):
            assert 200 <= value.code < 700 and value.code // 100 != 1, name
            assert value.reason and value.reason.isprintable() and value.reason.strip() == value.reason, name


@pytest.mark.parametrize("pv, nul, expected", [
    ("$rU", False, (400, "Invalid UTF-8 In Request-URI")),
    ("$fU", False, (400, "Invalid UTF-8 In From")),
    ("$tt", True, (400, "NUL Byte In To Tag")),
    ("$au", False, (400, "Invalid UTF-8 In Username")),
    ("$ci", True, (400, "NUL Byte In Call-ID")),
    ("$hdr(User-Agent)", False, (400, "Invalid UTF-8 In User-Agent")),
    ("$(hdr(Contact)[*])", False, (400, "Invalid UTF-8 In Contact")),
    ("$(hdr(Contact)[*]", False, (400, "Invalid UTF-8 In Request")),
    ("$hdr(X\r\nInjected: 1)", False, (400, "Invalid UTF-8 In Request")),  # never a header name as is
])
def test_unreadable_bytes_are_answered_400_naming_the_place(pv, nul, expected):
    answer = replies.unreadable(pv, nul)
    assert (answer.code, answer.reason) == expected and answer.reason.isprintable()
