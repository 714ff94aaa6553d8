"""The library speaks of its own parameters and operations; only the CLI names flags and commands
(ARCHITECTURE.md: ParameterError("batch_size", ...) is worded "--batch-size: ..." by cli/common.py,
and a remedy's Step.of("extract", ...) becomes "featcache extract ..."). This greps every string
literal of featcache/ outside cli/ that is not a docstring."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import featcache

ROOT = Path(featcache.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*|(?<![\w-])-[a-zA-Z] ")
COMMAND = re.compile(r"`featcache [a-z]|\bfit-head\b")  # the library says "fit the head", fit_head()
ARGV = re.compile(r"--?[\w-]+")  # one command-line token on its own: an argument list for a subprocess (pip)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def library_strings():
    for path in sorted(ROOT.rglob("*.py")):
        if "cli" in path.relative_to(ROOT).parts[:1]:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                yield f"{path.relative_to(ROOT.parent)}:{node.lineno}", node.value


def test_no_library_message_names_a_cli_flag_or_command():
    found = [f"{where}: {text!r}" for where, text in library_strings()
             if not ARGV.fullmatch(text) and (FLAG.search(text) or COMMAND.search(text))]
    assert not found, "library messages naming CLI flags or commands (use ParameterError / Remedy):\n" + \
        "\n".join(found)


def test_the_scan_sees_messages():
    """The test above would pass on an empty scan: make sure it reads the library's messages."""
    texts = [t for _, t in library_strings()]
    assert len(texts) > 500 and any("does not exist" in t for t in texts)
    assert FLAG.search("use --device cpu") and FLAG.search("(repeat -b NAME)") and COMMAND.search("`featcache info`")
    assert COMMAND.search("restore it or re-run fit-head") and not COMMAND.search("fit the head again")
    assert not FLAG.search("efficientnet_lite0-224-avg-v3") and ARGV.fullmatch("--no-deps")
