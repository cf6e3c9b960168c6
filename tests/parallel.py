"""How the suite is spread over pytest-xdist workers (docs/testing.md "Parallel runs").

``pytest`` on the whole suite (``make test``, CI) runs with ``-n 4 --dist loadgroup`` from
pyproject's ``addopts``. These hooks (imported by tests/conftest.py) decide what runs together:

- **One test file is one unit of work**: all its tests run on the same worker, in file order,
  so module-scoped fixtures start once and a file's tests see what they saw serially.
- **Tests of a shared daemon run together**: every file with a test that uses a fixture listed
  in ``DAEMON_GROUPS`` joins that daemon's group (one worker), so the daemon starts once per
  run, as it did serially. A new test that uses ``slurm_cluster`` (say) needs nothing more; a
  new expensive session-scoped daemon fixture gets a line in ``DAEMON_GROUPS``.
- Groups that take longest are handed out first (``HEAVY_FIRST``), so no worker starts a
  5-minute group when the others are about to finish.
- Naming only test files or node ids (``pytest tests/x.py``, ``make fuzz``) runs serially in
  one process unless ``-n``/``--numprocesses`` is given; ``-n 0`` always runs serially.

Everything else a test starts must be private to its worker already: free ports from
``free_port()``, files under ``tmp_path``/``tmp_path_factory`` (per worker), processes found
by PID or by a path under the test's own temp directory, never by name alone.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

# fixture name -> group: every file using one of these fixtures runs on one worker.
DAEMON_GROUPS = {
    "slurm_cluster": "slurm",  # munged + slurmctld + slurmd + slurmrestd (tests/slurm/conftest.py)
    "slurm_env": "slurm",
    "directory": "ext-auth",  # slapd (tests/accounts/ext/conftest.py)
    "idp": "ext-auth",  # npm oidc-provider
}

# Work units handed out first, longest first (the scheduler otherwise follows file order).
HEAVY_FIRST = ("slurm", "tests/api/test_schemathesis.py", "tests/deploy/test_wheel.py", "ext-auth")


def _explicit_numprocesses(config: pytest.Config) -> bool:
    """``-n``/``--numprocesses`` on the command line or in PYTEST_ADDOPTS (not pyproject's addopts)."""
    args = [str(a) for a in config.invocation_params.args] + shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    return any(a in ("-n", "--numprocesses") or a.startswith("--numprocesses=")
               or (a.startswith("-n") and not a.startswith("--")) for a in args)


def _names_only_files(config: pytest.Config) -> bool:
    """The command line names test files or node ids only (no directory, not the testpaths)."""
    paths = [a for a in config.args if not str(a).startswith("-")]
    if not paths:
        return False
    for a in paths:
        target = Path(str(a).split("::", 1)[0])
        if not target.is_absolute():
            target = config.invocation_params.dir / target
        if target.is_dir():
            return False
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Single files and node ids run serially unless ``-n`` was asked for on the command line."""
    if getattr(config.option, "numprocesses", None) in (None, 0):
        return
    if _names_only_files(config) and not _explicit_numprocesses(config):
        config.option.numprocesses = 0


def group_of_files(items: list[pytest.Item]) -> dict[str, str]:
    """file path -> its work unit: the file itself, or the joined daemon groups it belongs to
    (two daemons used by one file share a group, transitively)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    files: list[str] = []
    for item in items:
        f = item.nodeid.split("::", 1)[0]
        if f not in parent:
            files.append(f)
            find(f)
        for fixture in item.fixturenames:
            group = DAEMON_GROUPS.get(fixture)
            if group is not None:
                parent[find("@" + group)] = find(f)
    members: dict[str, set[str]] = {}
    for name in list(parent):
        if name.startswith("@"):
            members.setdefault(find(name), set()).add(name[1:])
    return {f: "+".join(sorted(members[find(f)])) if find(f) in members else f for f in files}


def _rank(group: str) -> int:
    for i, heavy in enumerate(HEAVY_FIRST):
        if heavy in group.split("+") or heavy == group:
            return i
    return len(HEAVY_FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (``--dist loadgroup``): mark every test with its work unit and hand the
    heaviest units out first. A serial run keeps the collected order."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or config.getoption("dist", "no") != "loadgroup":
        return
    groups = group_of_files(items)
    for item in items:
        if not any(True for _ in item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid.split("::", 1)[0]]))
    items.sort(key=lambda item: _rank(groups[item.nodeid.split("::", 1)[0]]))  # stable: file order kept
