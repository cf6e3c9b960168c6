"""Session-scoped real servers for external sign-in: OpenLDAP slapd and an OpenID provider."""
from __future__ import annotations

import pytest

from tests.accounts.ext import idp as idp_mod
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


@pytest.fixture(scope="session")
def idp(tmp_path_factory):
    """A running oidc-provider (tests/accounts/ext/idp.py); ``idp.rp_port`` is where the
    stcloud server under test must listen for the registered redirect URI."""
    try:
        p = idp_mod.start(tmp_path_factory.mktemp("idp"))
    except idp_mod.IdpUnavailable as exc:
        unavailable("oidc", str(exc))
    yield p
    p.stop()
