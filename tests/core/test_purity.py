"""The core must stay pure: no Twisted, no HTTP client, no database, no storage."""

import ast
from pathlib import Path

import homeserver.core

FORBIDDEN = ("twisted", "treq", "psycopg2", "sqlite3", "homeserver.storage")
CORE_DIR = Path(homeserver.core.__file__).parent


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.append(str(node.args[0].value))
    return names


def test_core_imports_nothing_impure():
    modules = sorted(CORE_DIR.rglob("*.py"))
    assert len(modules) >= 8
    offenders = []
    for path in modules:
        for name in _imports(ast.parse(path.read_text(), filename=str(path))):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN):
                offenders.append(f"{path.name}: {name}")
    assert not offenders, f"impure imports in homeserver/core: {offenders}"


def test_checker_catches_forbidden_imports():
    tree = ast.parse("import twisted.internet\nfrom homeserver.storage import events\nimport sqlite3 as s")
    found = _imports(tree)
    assert "twisted.internet" in found and "homeserver.storage" in found and "sqlite3" in found
