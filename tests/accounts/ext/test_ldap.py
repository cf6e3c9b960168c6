"""LDAP sign-in against a real slapd: bind-as-user and search-then-bind, groups → roles, and
the traps (empty password, filter/DN injection, unreachable or misconfigured directory)."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest

from stcloud.accounts import ldap
from stcloud.accounts.extauth import Misconfigured, Refused, Unreachable

ROLE_MAP = "stcloud-admins=admin;stcloud-members=member"


def bind_settings(d, **kw):
    cfg = {"STCLOUD_LDAP_URL": d.url,
           "STCLOUD_LDAP_USER_DN_TEMPLATE": f"uid={{username}},{d.people}",
           "STCLOUD_LDAP_ROLE_MAP": ROLE_MAP}
    cfg.update(kw)
    return ldap.settings_from(cfg)


def search_settings(d, **kw):
    cfg = {"STCLOUD_LDAP_URL": d.url,
           "STCLOUD_LDAP_BIND_DN": d.reader_dn, "STCLOUD_LDAP_BIND_PASSWORD": d.reader_password,
           "STCLOUD_LDAP_USER_BASE": d.people,
           "STCLOUD_LDAP_GROUP_BASE": d.groups,
           "STCLOUD_LDAP_ROLE_MAP": ROLE_MAP}
    cfg.update(kw)
    return ldap.settings_from(cfg)


MODES = {"bind": bind_settings, "search": search_settings}


@pytest.mark.parametrize("mode", MODES)
def test_good_password_returns_identity_with_groups(directory, mode):
    s = MODES[mode](directory)
    assert s.mode == mode
    ident = ldap.authenticate(s, "alice", directory.passwords["alice"])
    assert ident.username == "alice"
    assert ident.email == "alice@stcloud.test"
    assert ident.display_name == "Alice Admin"
    assert ident.source == "ldap"
    assert ident.groups == (f"cn=stcloud-admins,{directory.groups}",)
    assert ldap.role_for(s, ident.groups) == "admin"

    bob = ldap.authenticate(s, "bob", directory.passwords["bob"])
    assert bob.groups == (f"cn=stcloud-members,{directory.groups}",)
    assert ldap.role_for(s, bob.groups) == "member"


@pytest.mark.parametrize("mode", MODES)
def test_username_case_is_the_directorys(directory, mode):
    ident = ldap.authenticate(MODES[mode](directory), "  BoB ", directory.passwords["bob"])
    assert ident.username == "bob"


@pytest.mark.parametrize("mode", MODES)
def test_bad_password_and_unknown_user_return_none(directory, mode):
    s = MODES[mode](directory)
    assert ldap.authenticate(s, "alice", directory.passwords["alice"] + "x") is None
    assert ldap.authenticate(s, "alice", directory.passwords["bob"]) is None
    assert ldap.authenticate(s, "nobody", "whatever") is None


@pytest.mark.parametrize("mode", MODES)
def test_empty_password_is_never_an_anonymous_login(directory, mode):
    s = MODES[mode](directory)
    # This directory (like Active Directory and many others) answers a simple bind with a DN
    # and an empty password with success, as an anonymous session: prove it, so that the
    # refusal below means something.
    who = subprocess.run(["ldapwhoami", "-x", "-H", directory.url, "-D", f"uid=alice,{directory.people}",
                          "-w", ""], capture_output=True, text=True, timeout=20)
    assert who.returncode == 0 and who.stdout.strip() == "anonymous", (who.stdout, who.stderr)
    for user in ("alice", "nobody", ""):
        assert ldap.authenticate(s, user, "") is None
        assert ldap.authenticate(s, user, None) is None
    assert ldap.authenticate(s, "", directory.passwords["alice"]) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("evil", ["*", "al*", "alice)(uid=*", "*)(|(uid=*", "alice,ou=people", "alice\x00"])
def test_injection_matches_nothing(directory, mode, evil):
    s = MODES[mode](directory)
    for password in (directory.passwords["alice"], directory.passwords["bob"]):
        assert ldap.authenticate(s, evil, password) is None


@pytest.mark.parametrize("mode", MODES)
def test_metacharacters_in_a_real_username_are_escaped_not_interpreted(directory, mode):
    s = MODES[mode](directory)
    ident = ldap.authenticate(s, "dave(x)", directory.passwords["dave(x)"])
    assert ident.username == "dave(x)"
    assert ldap.role_for(s, ident.groups) == "member"


def test_user_in_no_group_gets_default_role_or_is_refused(directory):
    s = search_settings(directory)
    carol = ldap.authenticate(s, "carol", directory.passwords["carol"])
    assert carol.groups == ()
    assert ldap.role_for(s, carol.groups) == "viewer"
    strict = search_settings(directory, STCLOUD_LDAP_DEFAULT_ROLE="none")
    with pytest.raises(Refused):
        ldap.role_for(strict, carol.groups)
    assert ldap.role_for(search_settings(directory, STCLOUD_LDAP_DEFAULT_ROLE="member"), ()) == "member"


def test_role_map_by_dn_and_most_privileged_wins(directory):
    s = bind_settings(directory, STCLOUD_LDAP_ROLE_MAP=(
        f"cn=stcloud-members,{directory.groups}=member;CN=STCLOUD-ADMINS, OU=groups, DC=stcloud, DC=test=admin"))
    assert ldap.role_for(s, (f"cn=stcloud-members,{directory.groups}",)) == "member"
    both = (f"cn=stcloud-members,{directory.groups}", f"cn=stcloud-admins,{directory.groups}")
    assert ldap.role_for(s, both) == "admin"
    json_map = bind_settings(directory, STCLOUD_LDAP_ROLE_MAP='{"stcloud-members": "viewer"}')
    assert ldap.role_for(json_map, (f"cn=stcloud-members,{directory.groups}",)) == "viewer"


def test_groups_from_member_of_in_search_mode(directory):
    s = search_settings(directory, STCLOUD_LDAP_GROUP_BASE="")
    assert s.group_base is None
    ident = ldap.authenticate(s, "bob", directory.passwords["bob"])
    assert ident.groups == (f"cn=stcloud-members,{directory.groups}",)


def test_bind_mode_with_user_search_as_the_user(directory):
    s = bind_settings(directory, STCLOUD_LDAP_USER_BASE=directory.people, STCLOUD_LDAP_GROUP_BASE=directory.groups)
    ident = ldap.authenticate(s, "alice", directory.passwords["alice"])
    assert ident.groups == (f"cn=stcloud-admins,{directory.groups}",)


def test_start_tls_and_ldaps(directory):
    ca = str(directory.tls.ca_cert)
    for s in (bind_settings(directory, STCLOUD_LDAP_START_TLS="true", STCLOUD_LDAP_CA_FILE=ca),
              bind_settings(directory, STCLOUD_LDAP_URL=directory.ldaps_url, STCLOUD_LDAP_CA_FILE=ca)):
        assert s.uses_tls
        assert ldap.authenticate(s, "bob", directory.passwords["bob"]).username == "bob"
        assert ldap.authenticate(s, "bob", "wrong") is None


def test_tls_with_an_unknown_ca_is_a_clear_error(directory):
    s = bind_settings(directory, STCLOUD_LDAP_URL=directory.ldaps_url)  # system CAs only
    with pytest.raises(Unreachable, match="unreachable|StartTLS|certificate|ssl"):
        ldap.authenticate(s, "bob", directory.passwords["bob"])


def test_unreachable_server_is_a_clear_error_quickly(directory):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    s = bind_settings(directory, STCLOUD_LDAP_URL=f"ldap://127.0.0.1:{port}", STCLOUD_LDAP_CONNECT_TIMEOUT="2")
    t0 = time.monotonic()
    with pytest.raises(Unreachable, match=f"127.0.0.1:{port}"):
        ldap.authenticate(s, "alice", directory.passwords["alice"])
    assert time.monotonic() - t0 < 10


def test_a_server_that_never_answers_times_out(directory):
    with socket.socket() as listener:  # accepts connections, never speaks LDAP
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        s = bind_settings(directory, STCLOUD_LDAP_URL=f"ldap://127.0.0.1:{port}", STCLOUD_LDAP_TIMEOUT="1")
        t0 = time.monotonic()
        with pytest.raises(Unreachable):
            ldap.authenticate(s, "alice", directory.passwords["alice"])
        assert time.monotonic() - t0 < 10


def test_wrong_service_account_or_base_is_a_misconfiguration(directory):
    with pytest.raises(Misconfigured, match="service account"):
        ldap.authenticate(search_settings(directory, STCLOUD_LDAP_BIND_PASSWORD="nope"),
                          "alice", directory.passwords["alice"])
    with pytest.raises(Misconfigured, match="does not exist"):
        ldap.authenticate(search_settings(directory, STCLOUD_LDAP_USER_BASE=f"ou=nowhere,{directory.base}"),
                          "alice", directory.passwords["alice"])


@pytest.mark.parametrize("cfg, match", [
    ({"STCLOUD_LDAP_URL": "http://x"}, "ldap://"),
    ({"STCLOUD_LDAP_URL": "ldap://x"}, "USER_DN_TEMPLATE"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_DN_TEMPLATE": "uid=x,dc=y"}, "{username}"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_DN_TEMPLATE": "{username}@corp.example"}, "USER_BASE"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_BASE": "dc=y", "STCLOUD_LDAP_USER_FILTER": "(uid=x)"},
     "{username}"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_BASE": "dc=y", "STCLOUD_LDAP_BIND_DN": "cn=a"},
     "go together"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_BASE": "dc=y", "STCLOUD_LDAP_ROLE_MAP": "g=root"},
     "not one of"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_BASE": "dc=y", "STCLOUD_LDAP_ROLE_MAP": "nogroup"},
     "group=role"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_BASE": "dc=y", "STCLOUD_LDAP_DEFAULT_ROLE": "boss"},
     "default role"),
    ({"STCLOUD_LDAP_URL": "ldaps://x", "STCLOUD_LDAP_USER_BASE": "dc=y", "STCLOUD_LDAP_START_TLS": "yes"},
     "START_TLS"),
    ({"STCLOUD_LDAP_URL": "ldap://x", "STCLOUD_LDAP_USER_BASE": "dc=y", "STCLOUD_LDAP_TIMEOUT": "soon"},
     "not a number"),
])
def test_bad_settings_are_refused_clearly(cfg, match):
    with pytest.raises(Misconfigured, match=match):
        ldap.settings_from(cfg)


def test_not_configured_is_none():
    assert ldap.settings_from({}) is None
    assert ldap.settings_from({"STCLOUD_LDAP_URL": "  "}) is None


def test_upn_and_down_level_bind_names_refuse_separators():
    assert ldap._bind_name("{username}@corp.example", "bob") == "bob@corp.example"
    assert ldap._bind_name("CORP\\{username}", "bob") == "CORP\\bob"
    for evil in ("bob@other.example", "other\\bob", "bob,ou=x", "a=b"):
        assert ldap._bind_name("{username}@corp.example", evil) is None
    assert ldap._bind_name("uid={username},dc=x", "a,b=c") == "uid=a\\,b\\=c,dc=x"


def test_group_filter_by_username(directory):
    # groupOfNames (member=DN) or posixGroup (memberUid=the directory's username) in one filter
    s = search_settings(directory, STCLOUD_LDAP_GROUP_FILTER="(|(member={dn})(memberUid={username}))")
    assert ldap.authenticate(s, "BOB", directory.passwords["bob"]).groups == (f"cn=stcloud-members,{directory.groups}",)
