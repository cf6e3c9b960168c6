"""LDAP/OIDC settings: the environment, or the Settings page's stored section (which then
wins as a whole); secrets stay out of the database and out of every view."""
from __future__ import annotations

import json

import pytest

from stcloud import secrets
from stcloud import settings as settings_store
from stcloud.accounts import extconfig
from stcloud.errors import ValidationError

LDAP_FORM = {"URL": "ldap://ldap.example.org", "BIND_DN": "cn=reader,dc=example,dc=org",
             "BIND_PASSWORD": "s3cret-bind", "USER_BASE": "ou=people,dc=example,dc=org",
             "ROLE_MAP": "admins=admin", "DEFAULT_ROLE": "none", "START_TLS": "on"}


def test_env_applies_until_a_section_is_stored(make_app, home):
    app = make_app(STCLOUD_LDAP_URL="ldap://env.example", STCLOUD_LDAP_USER_DN_TEMPLATE="uid={username},dc=env")
    with app.app_context():
        s = extconfig.effective("ldap")
        assert (s.url, s.mode) == ("ldap://env.example", "bind")
        assert extconfig.view("ldap")["source"] == "env"

        v = extconfig.save("ldap", LDAP_FORM)
        assert v["source"] == "settings" and v["enabled"] and v["has_secret"]
        assert v["form"]["BIND_PASSWORD"] == ""  # never shown again
        s = extconfig.effective("ldap")
        assert (s.url, s.mode, s.bind_password, s.default_role, s.start_tls) == (
            "ldap://ldap.example.org", "search", "s3cret-bind", None, True)
        assert s.user_dn_template is None  # the env's template does not leak into the stored section

        stored = settings_store.get("auth.ldap")
        assert "s3cret-bind" not in json.dumps(stored)
        assert secrets.get(home, "auth_ldap_bind_password") == "s3cret-bind"

        # saving again without a password keeps the stored one
        extconfig.save("ldap", {**LDAP_FORM, "BIND_PASSWORD": "", "ROLE_MAP": "admins=admin;staff=member"})
        assert extconfig.effective("ldap").bind_password == "s3cret-bind"

        # an empty URL switches the stored section off: the environment applies again
        v = extconfig.save("ldap", {"URL": ""})
        assert v["source"] == "env"
        assert extconfig.effective("ldap").url == "ldap://env.example"
        assert secrets.get(home, "auth_ldap_bind_password") is None


def test_unusable_values_are_refused_and_nothing_is_stored(app, home):
    with app.app_context():
        with pytest.raises(ValidationError, match="go together"):
            extconfig.save("ldap", {**LDAP_FORM, "BIND_PASSWORD": ""})
        with pytest.raises(ValidationError, match="not one of"):
            extconfig.save("ldap", {**LDAP_FORM, "ROLE_MAP": "admins=root"})
        assert settings_store.get("auth.ldap") is None
        assert secrets.get(home, "auth_ldap_bind_password") is None
        assert extconfig.effective("ldap") is None
        assert extconfig.view("ldap")["source"] is None


def test_oidc_section_and_public_client(app):
    with app.app_context():
        form = {"ISSUER": "https://sso.example.com/realms/main", "CLIENT_ID": "stcloud", "CLIENT_SECRET": "cs",
                "NAME": "Keycloak", "ROLE_CLAIM": "realm_access.roles", "ROLE_MAP": "stcloud-admin=admin",
                "DEFAULT_ROLE": "viewer"}
        extconfig.save("oidc", form)
        s = extconfig.effective("oidc")
        assert (s.issuer, s.client_secret, s.name, s.role_claim) == (
            "https://sso.example.com/realms/main", "cs", "Keycloak", "realm_access.roles")
        extconfig.save("oidc", {**form, "CLIENT_SECRET": "", "clear_secret": "1"})
        assert extconfig.effective("oidc").client_secret is None
        with pytest.raises(ValidationError, match="https"):
            extconfig.save("oidc", {**form, "ISSUER": "http://sso.example.com"})
        assert extconfig.effective("oidc").issuer == "https://sso.example.com/realms/main"


def test_a_broken_environment_is_reported_not_raised_by_the_view(make_app):
    app = make_app(STCLOUD_OIDC_ISSUER="https://sso.example.com")  # no client id
    with app.app_context():
        v = extconfig.view("oidc")
        assert v["source"] == "env" and not v["enabled"] and "CLIENT_ID" in v["problem"]


def test_every_ldap_and_oidc_variable_is_read_from_the_environment(make_app, monkeypatch):
    monkeypatch.setenv("STCLOUD_LDAP_URL", "ldaps://dir.example")
    monkeypatch.setenv("STCLOUD_LDAP_USER_BASE", "ou=people,dc=example")
    monkeypatch.setenv("STCLOUD_OIDC_ISSUER", "https://sso.example")
    monkeypatch.setenv("STCLOUD_OIDC_CLIENT_ID", "stc")
    monkeypatch.setenv("STCLOUD_OIDC_ROLE_MAP", "a=admin")
    app = make_app()
    with app.app_context():
        assert extconfig.effective("ldap").user_base == "ou=people,dc=example"
        o = extconfig.effective("oidc")
        assert (o.issuer, o.client_id, o.role_map) == ("https://sso.example", "stc", (("a", "admin"),))
