"""Import rules from STYLE.md, checked on the source (an import-linter-style contract)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "stcloud"
FORBIDDEN_IN_ADAPTERS = ("flask", "sqlalchemy", "stcloud.db", "stcloud.models", "werkzeug")
ADAPTERS = ["providers/replicate.py", "providers/base.py", "packaging", "storage/sigv4.py",
            "storage/chunked.py", "trainer", "jobs/states.py", "jobs/progress.py", "webhooks/verify.py",
            "webhooks/netfilter.py", "costs/periods.py", "workers/matching.py",
            "accounts/ldap.py", "accounts/oidc.py", "accounts/extauth.py", "accounts/external.py"]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(rel: str) -> list[Path]:
    p = PKG / rel
    if p.is_dir():
        return sorted(p.rglob("*.py"))
    return [p] if p.exists() else []


@pytest.mark.parametrize("rel", ADAPTERS)
def test_adapters_import_no_flask_or_database(rel):
    for path in files(rel):
        bad = {n for n in imports_of(path) if n.startswith(FORBIDDEN_IN_ADAPTERS)}
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_routes_never_commit():
    for path in PKG.rglob("*routes*.py"):
        src = path.read_text()
        assert ".commit()" not in src, f"{path.relative_to(PKG)} commits; services own transactions"


def test_web_path_does_not_import_scheduler_start():
    for path in PKG.rglob("*.py"):
        if path.name in ("cli.py", "scheduler.py"):
            continue
        assert "scheduler.start(" not in path.read_text() and "sched_mod.start(" not in path.read_text(), path
