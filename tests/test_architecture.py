"""Import rules from STYLE.md, checked on the source (an import-linter-style contract)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "stcloud"
FORBIDDEN_IN_ADAPTERS = ("flask", "sqlalchemy", "stcloud.db", "stcloud.models", "werkzeug")
ADAPTERS = ["providers/replicate.py", "providers/base.py", "packaging", "storage/sigv4.py",
            "storage/chunked.py", "trainer", "states.py", "jobs/progress.py", "webhooks/verify.py",
            "web/netfilter.py", "costs/periods.py", "workers/matching.py",
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


# ---- the provider seam (issue 11) -------------------------------------------------------------

ROOT = PKG.parent
# Modules of stcloud/providers/ that the rest of stcloud may import: the seam itself and the
# provider settings store. Everything else there is a provider's own (adapter, factory, helpers).
SEAM = {"stcloud.providers.base", "stcloud.providers.registry", "stcloud.providers.config"}
# Client libraries of a provider's API: only its adapter modules talk to them.
PROVIDER_CLIENTS = ("replicate",)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts
    return ".".join(parts)


def all_imports(path: Path) -> set[str]:
    """Every stcloud module ``path`` imports, at module level or inside functions
    (``from stcloud.x import y`` counts as stcloud.x.y when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("stcloud"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("stcloud"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    return {name: {m for m in all_imports(path) if m in modules and m != name} for name, path in modules.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PKG / parts[1]).is_dir()) else module


def test_no_module_outside_providers_imports_a_provider_adapter():
    bad = []
    for name, imports in graph().items():
        if name.startswith("stcloud.providers") or name == "stcloud":
            continue
        bad += [f"{name} -> {m}" for m in imports if m.startswith("stcloud.providers.") and m not in SEAM]
    assert not bad, "only the seam (base, registry, config) is for the rest of stcloud:\n" + "\n".join(bad)


def test_no_module_outside_providers_calls_a_provider_client():
    bad = []
    for path in PKG.rglob("*.py"):
        if path.is_relative_to(PKG / "providers"):
            continue
        bad += [f"{path.relative_to(PKG)} imports {n}" for n in imports_of(path)
                if n.split(".")[0] in PROVIDER_CLIENTS]
    assert not bad, "\n".join(bad)


def _builtin_names() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return sorted(project["entry-points"]["stcloud.providers"])


def test_the_provider_list_is_defined_once():
    """The entry points are the list: no tuple, list or set of provider names in the code."""
    names = set(_builtin_names())
    assert {"replicate", "worker", "local", "simpletuner_io"} <= names
    bad = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                consts = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(consts & names) >= 2:
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno}: {sorted(consts & names)}")
    assert not bad, "provider names listed outside the registry:\n" + "\n".join(bad)


def test_the_registry_lists_the_entry_points(app):
    from stcloud.providers import registry

    with app.app_context():
        assert set(_builtin_names()) <= set(registry.names())
        for name in _builtin_names():
            assert registry.get(name).provider_name == name


def test_jobs_know_no_provider():
    """Adding a provider touches no file in jobs/: no provider's name or module there."""
    bad = []
    for path in (PKG / "jobs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _builtin_names():
                bad.append(f"{path.relative_to(PKG)}:{node.lineno}: {node.value!r}")
    assert not bad, "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    """Counting imports inside functions: an import moved into a function to dodge a cycle is
    still a cycle. (The app factory and the CLI load every part of the app on purpose.)"""
    g = graph()
    g = {m: {i for i in deps if i not in ("stcloud", "stcloud.cli")} for m, deps in g.items()}
    assert not _cycles(g)


def test_no_import_cycles_between_packages():
    """Counting imports inside functions, as for modules."""
    pkgs: dict[str, set[str]] = {}
    for module, deps in graph().items():
        if module in ("stcloud", "stcloud.cli"):
            continue
        src = package_of(module)
        pkgs.setdefault(src, set()).update(package_of(d) for d in deps
                                           if package_of(d) != src and d not in ("stcloud", "stcloud.cli"))
    # Not only pairs: no package reaches itself through any chain of imports. Where a lower
    # package needs something of a higher one, the higher one registers it in app.extensions
    # (trusted proxies, the per-job credential minter, pricing for the Providers page).
    assert not _cycles(pkgs), f"packages that import each other (directly or through others): {_cycles(pkgs)}"
