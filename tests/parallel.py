"""How the suite is spread over pytest-xdist workers (docs/testing.md "Parallel runs").

``pytest`` on the whole suite (``make test``, CI) runs with ``-n 3 --dist loadscope`` from
pyproject's ``addopts``; these hooks (imported by tests/conftest.py) decide what runs together:

- **One test file is one unit of work**: all its tests run on the same worker, in file order,
  so module-scoped fixtures start once and a file's tests see what they saw serially.
- **A shared daemon's directory is one unit of work** (``DAEMON_GROUPS``): its session-scoped
  daemon (Slurm; slapd + the OpenID provider) starts once per run, as it did serially.
- The longest units (``HEAVY_FIRST``) are handed out first, so no worker starts them last.
- Naming only test files or node ids (``pytest tests/x.py``, ``make fuzz``) runs serially in
  one process unless ``-n``/``--numprocesses`` is given; ``-n 0`` always runs serially.

pytest 9.2 ignores pytest-xdist 3.8's ``xdist_group`` marks (xdist renames ``item._nodeid``,
which no longer makes the node id), so the grouping is a scheduler of our own.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

# A shared daemon's fixtures (defined in its directory's conftest.py, so only tests under that
# directory can use them) -> the directory: all its files are one unit of work.
DAEMON_GROUPS = {
    "tests/slurm/": ("slurm_cluster", "slurm_env"),  # munged + slurmctld + slurmd + slurmrestd
    "tests/accounts/ext/": ("directory", "idp"),  # slapd, the npm oidc-provider
}

# Units handed out first, longest first (otherwise the scheduler follows collection order).
HEAVY_FIRST = ("tests/slurm/", "tests/api/test_schemathesis.py", "tests/deploy/test_wheel.py",
               "tests/accounts/ext/")


def unit_of(nodeid: str) -> str:
    """The unit of work of a test: its daemon group's directory, else its file."""
    path = nodeid.split("::", 1)[0]
    for directory in DAEMON_GROUPS:
        if path.startswith(directory):
            return directory
    return path


class FileAndDaemonScheduling(LoadScopeScheduling):
    """``--dist loadscope`` with :func:`unit_of` as the scope, in collection order."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    config.option.loadscopereorder = False  # keep HEAVY_FIRST's order, set at collection
    return FileAndDaemonScheduling(config, log)


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


def _rank(unit: str) -> int:
    return HEAVY_FIRST.index(unit) if unit in HEAVY_FIRST else len(HEAVY_FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test using a shared daemon's fixture outside that daemon's directory is an error (its
    unit would start a second daemon); on an xdist worker, the heaviest units come first."""
    for item in items:
        for directory, fixtures in DAEMON_GROUPS.items():
            used = set(fixtures) & set(getattr(item, "fixturenames", ()))
            if used and not item.nodeid.startswith(directory):
                raise pytest.UsageError(
                    f"{item.nodeid} uses {', '.join(sorted(used))}: move it under {directory} "
                    "or add its file to DAEMON_GROUPS in tests/parallel.py")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: _rank(unit_of(item.nodeid)))  # stable: file order kept
