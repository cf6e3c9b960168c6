"""Helpers for tests that start real daemons (Slurm, nginx, Caddy, slapd, an OpenID provider,
a forward proxy, PostgreSQL) on loopback.

A daemon that cannot start makes its tests skip with a loud reason on a developer's machine,
and fail when ``CI=true`` (CI must run them)."""
from __future__ import annotations

import os
import sys

import pytest


def unavailable(what: str, reason: str) -> None:
    """Skip (or, with CI=true, fail) the calling test/fixture: ``what`` could not start."""
    msg = f"{what.upper()} TESTS NOT RUN: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " — required when CI=true", pytrace=False)
    sys.stderr.write("\n" + "!" * 78 + f"\n!!! {msg}\n" + "!" * 78 + "\n")
    pytest.skip(msg)
