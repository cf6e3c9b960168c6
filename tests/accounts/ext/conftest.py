"""Session-scoped real servers for external sign-in: OpenLDAP slapd and an OpenID provider."""
from __future__ import annotations

import pytest

from tests.accounts.ext import slapd as slapd_mod
from tests.daemons import unavailable


@pytest.fixture(scope="session")
def directory(tmp_path_factory):
    """A running slapd with the tiny directory of tests/accounts/ext/slapd.py."""
    try:
        d = slapd_mod.start(tmp_path_factory.mktemp("slapd"))
    except slapd_mod.SlapdUnavailable as exc:
        unavailable("ldap", str(exc))
    yield d
    d.stop()
