"""Where the LDAP and OIDC sign-in settings come from: the Settings page (stored in the
settings table, their one secret each in ``STCLOUD_HOME/secrets.json``) or, when nothing is
stored, the ``STCLOUD_LDAP_*`` / ``STCLOUD_OIDC_*`` environment (app config).

A stored section replaces the environment as a whole (never a mix of the two), so what the
page shows is what runs. Saving validates first: nothing half-written."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app

from stcloud import secrets
from stcloud import settings as settings_store
from stcloud.accounts import ldap, oidc
from stcloud.accounts.extauth import Misconfigured
from stcloud.errors import ValidationError


@dataclass(frozen=True)
class Field:
    key: str  # suffix after the prefix: URL -> STCLOUD_LDAP_URL
    label: str
    kind: str = "text"  # text | secret | bool | select
    hint: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    name: str  # "ldap" | "oidc"
    prefix: str
    setting_key: str  # row in the settings table
    secret_field: str  # the one write-only field, kept in secrets.json
    fields: tuple[Field, ...]
    parse: Any  # settings_from(mapping) -> settings | None

    @property
    def secret_key(self) -> str:
        return f"auth_{self.name}_{self.secret_field.lower()}"


ROLE_CHOICES = ("viewer", "member", "admin", "none")

LDAP = Section("ldap", ldap.PREFIX, "auth.ldap", "BIND_PASSWORD", (
    Field("URL", "Server URL", hint="ldap://ldap.example.com:389 or ldaps://ldap.example.com:636; empty: LDAP off"),
    Field("USER_DN_TEMPLATE", "Bind as the user: DN template",
          hint="uid={username},ou=people,dc=example,dc=org, or {username}@corp.example.com (AD)"),
    Field("BIND_DN", "Or search, then bind: service account DN"),
    Field("BIND_PASSWORD", "Service account password", "secret"),
    Field("USER_BASE", "User search base", hint="ou=people,dc=example,dc=org"),
    Field("USER_FILTER", "User filter", hint="(uid={username}); AD: (sAMAccountName={username})"),
    Field("USERNAME_ATTR", "Username attribute", hint="uid; AD: sAMAccountName"),
    Field("EMAIL_ATTR", "E-mail attribute", hint="mail"),
    Field("NAME_ATTR", "Display name attribute", hint="displayName"),
    Field("GROUP_BASE", "Group search base", hint="empty: read the memberOf attribute"),
    Field("GROUP_FILTER", "Group filter", hint="(member={dn})"),
    Field("MEMBER_OF_ATTR", "Member-of attribute", hint="memberOf"),
    Field("ROLE_MAP", "Groups → roles", hint="stcloud-admins=admin;stcloud-members=member (name or DN)"),
    Field("DEFAULT_ROLE", "Role of users in no mapped group", "select", choices=ROLE_CHOICES),
    Field("START_TLS", "StartTLS", "bool"),
    Field("CA_FILE", "CA certificate file", hint="PEM path on the server; empty: the system CAs"),
    Field("CONNECT_TIMEOUT", "Connect timeout (s)", hint="5"),
    Field("TIMEOUT", "Answer timeout (s)", hint="10"),
), ldap.settings_from)

OIDC = Section("oidc", oidc.PREFIX, "auth.oidc", "CLIENT_SECRET", (
    Field("ISSUER", "Issuer URL", hint="https://sso.example.com/realms/main; empty: OIDC off"),
    Field("NAME", "Provider name on the login button", hint="OpenID Connect"),
    Field("CLIENT_ID", "Client ID"),
    Field("CLIENT_SECRET", "Client secret", "secret", hint="empty: a public client (PKCE only)"),
    Field("SCOPES", "Scopes", hint="openid profile email"),
    Field("USERNAME_CLAIM", "Username claim", hint="empty: preferred_username, then email, then sub"),
    Field("ROLE_CLAIM", "Group/role claim", hint="groups; Keycloak realm roles: realm_access.roles"),
    Field("ROLE_MAP", "Groups → roles", hint="stcloud-admins=admin;stcloud-members=member"),
    Field("DEFAULT_ROLE", "Role of users in no mapped group", "select", choices=ROLE_CHOICES),
    Field("CA_FILE", "CA certificate file", hint="PEM path on the server; empty: the system CAs"),
), oidc.settings_from)

SECTIONS = {"ldap": LDAP, "oidc": OIDC}


def _home() -> str:
    return current_app.config["STCLOUD_HOME"]


def _stored(section: Section) -> dict:
    value = settings_store.get(section.setting_key)
    return dict(value) if isinstance(value, dict) else {}


def _mapping(section: Section) -> tuple[dict, str | None]:
    """The ``STCLOUD_<X>_*`` mapping in effect and where it comes from (settings/env/None)."""
    stored = _stored(section)
    if stored:
        mapping = {section.prefix + k: v for k, v in stored.items()}
        secret = secrets.get(_home(), section.secret_key)
        if secret:
            mapping[section.prefix + section.secret_field] = secret
        return mapping, "settings"
    cfg = current_app.config
    env = {k: cfg[k] for k in cfg if isinstance(k, str) and k.startswith(section.prefix)}
    return env, ("env" if env else None)


def effective(name: str):
    """The LdapSettings / OidcSettings in effect, or None when that sign-in is off.
    Raise Misconfigured when the settings in effect are unusable."""
    section = SECTIONS[name]
    mapping, _ = _mapping(section)
    return section.parse(mapping)


def view(name: str) -> dict:
    """What the Settings page shows: values (never the secret), source, and any problem."""
    section = SECTIONS[name]
    mapping, source = _mapping(section)
    values = {f.key: ("" if f.kind == "secret" else str(mapping.get(section.prefix + f.key) or ""))
              for f in section.fields}
    has_secret = bool(mapping.get(section.prefix + section.secret_field))
    problem = None
    try:
        enabled = section.parse(mapping) is not None
    except Misconfigured as exc:
        enabled, problem = False, str(exc)
    return {"name": name, "prefix": section.prefix, "fields": section.fields, "form": values,
            "source": source, "enabled": enabled, "problem": problem, "has_secret": has_secret,
            "secret_field": section.secret_field}


def save(name: str, form: Mapping[str, str]) -> dict:
    """Store the section from ``form`` (keys as in Field.key). An empty secret keeps the stored
    one; ``clear_secret`` removes it; an empty URL/issuer switches the section off (then the
    environment applies again). Raise ValidationError (nothing stored) on unusable values."""
    section = SECTIONS[name]
    values = {}
    for f in section.fields:
        if f.kind == "secret":
            continue
        raw = form.get(f.key)
        if f.kind == "bool":
            values[f.key] = "true" if raw in ("on", "true", "1", "yes") else "false"
        elif raw is not None and str(raw).strip():
            values[f.key] = str(raw).strip()
    new_secret = form.get(section.secret_field) or None
    if form.get("clear_secret"):
        secret = None
    else:
        secret = new_secret or secrets.get(_home(), section.secret_key)
    first = section.fields[0].key
    if not values.get(first):
        settings_store.put(section.setting_key, None)
        secrets.delete(_home(), section.secret_key)
        return view(name)
    mapping = {section.prefix + k: v for k, v in values.items()}
    if secret:
        mapping[section.prefix + section.secret_field] = secret
    try:
        section.parse(mapping)
    except Misconfigured as exc:
        raise ValidationError(str(exc)) from None
    if secret:
        secrets.put(_home(), section.secret_key, secret)
    else:
        secrets.delete(_home(), section.secret_key)
    settings_store.put(section.setting_key, values)
    return view(name)
