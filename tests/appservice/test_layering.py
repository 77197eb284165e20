"""homeserver/ imports appservice/ only in the composition root (DESIGN rule 4)."""
import ast
from pathlib import Path

import homeserver

ROOT = Path(homeserver.__file__).parent


def test_only_server_py_imports_appservice():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "server.py" and path.parent == ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "appservice"]
    assert offenders == []
