"""LDAP sign-in (ldap3): bind as the user, or search for the user with a service account and
then bind as the entry found; read e-mail, name and groups; map groups to a role.

Two traps this module exists to avoid:
- An empty password makes a simple bind "unauthenticated" (RFC 4513 §5.1.2): many servers
  answer success without checking anything. An empty password is never sent.
- The username goes into a search filter and a DN: it is escaped for each (RFC 4515 / 4514),
  so ``*`` or ``)(uid=*`` cannot widen a search and ``,`` cannot move a DN.

No Flask and no database here (an adapter): ``authenticate`` returns an ExternalIdentity and
the accounts service creates the account and the session."""
from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from ldap3 import BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPCommunicationError,
    LDAPException,
    LDAPInvalidDnError,
    LDAPInvalidFilterError,
    LDAPStartTLSError,
)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from stcloud.accounts.extauth import (
    ExternalAuthError,
    Misconfigured,
    RoleMap,
    Unreachable,
    env_bool,
    env_float,
    env_text,
    parse_default_role,
    parse_role_map,
    pick_role,
)
from stcloud.accounts.external import ExternalIdentity

PREFIX = "STCLOUD_LDAP_"
SOURCE = "ldap"
# bind results that mean "these credentials do not sign in" rather than "the server is broken"
_BAD_CREDENTIALS = {
    32,  # noSuchObject: no entry at the templated DN
    48,  # inappropriateAuthentication
    49,  # invalidCredentials (AD adds a data code: expired, locked, disabled...)
    53,  # unwillingToPerform (e.g. account disabled)
}
_SERVER_DOWN = {51, 52}  # busy, unavailable
# characters that have a meaning in a UPN / DOMAIN\user bind name or nowhere in a username
_NOT_IN_BIND_NAME = set('\\/@,;=+<>"#') | {chr(c) for c in range(32)}


@dataclass(frozen=True)
class LdapSettings:
    """Read from ``STCLOUD_LDAP_*`` (see docs/accounts-external.md)."""

    url: str
    user_dn_template: str | None = None  # bind as the user: "uid={username},ou=people,dc=…"
    bind_dn: str | None = None  # search-then-bind: the service account…
    bind_password: str | None = None
    user_base: str | None = None  # …searches here
    user_filter: str = "(uid={username})"
    username_attr: str = "uid"
    email_attr: str = "mail"
    name_attr: str = "displayName"
    group_base: str | None = None  # search groups here; unset: read member_of_attr
    group_filter: str = "(member={dn})"
    member_of_attr: str = "memberOf"
    role_map: RoleMap = ()
    default_role: str | None = "viewer"  # None: users in no mapped group are refused
    start_tls: bool = False
    ca_file: str | None = None
    tls_verify: bool = True
    connect_timeout: float = 5.0
    timeout: float = 10.0

    @property
    def mode(self) -> str:
        return "bind" if self.user_dn_template else "search"

    @property
    def uses_tls(self) -> bool:
        return self.start_tls or self.url.lower().startswith("ldaps://")


def settings_from(config: Mapping) -> LdapSettings | None:
    """LdapSettings from a mapping of ``STCLOUD_LDAP_*`` keys (app config / env), or None
    when ``STCLOUD_LDAP_URL`` is unset. Raise Misconfigured on an unusable combination."""
    def get(key: str) -> str | None:
        return env_text(config, PREFIX + key)

    url = get("URL")
    if not url:
        return None
    if not url.lower().startswith(("ldap://", "ldaps://")):
        raise Misconfigured(f"{PREFIX}URL must start with ldap:// or ldaps:// (got {url!r})")
    defaults = LdapSettings(url=url)
    settings = LdapSettings(
        url=url,
        user_dn_template=get("USER_DN_TEMPLATE"),
        bind_dn=get("BIND_DN"),
        bind_password=config.get(PREFIX + "BIND_PASSWORD") or None,
        user_base=get("USER_BASE"),
        user_filter=get("USER_FILTER") or defaults.user_filter,
        username_attr=get("USERNAME_ATTR") or defaults.username_attr,
        email_attr=get("EMAIL_ATTR") or defaults.email_attr,
        name_attr=get("NAME_ATTR") or defaults.name_attr,
        group_base=get("GROUP_BASE"),
        group_filter=get("GROUP_FILTER") or defaults.group_filter,
        member_of_attr=get("MEMBER_OF_ATTR") or defaults.member_of_attr,
        role_map=parse_role_map(config.get(PREFIX + "ROLE_MAP")),
        default_role=parse_default_role(config.get(PREFIX + "DEFAULT_ROLE")),
        start_tls=env_bool(config.get(PREFIX + "START_TLS")),
        ca_file=get("CA_FILE"),
        tls_verify=env_bool(config.get(PREFIX + "TLS_VERIFY"), default=True),
        connect_timeout=env_float(PREFIX + "CONNECT_TIMEOUT", config.get(PREFIX + "CONNECT_TIMEOUT"), 5.0),
        timeout=env_float(PREFIX + "TIMEOUT", config.get(PREFIX + "TIMEOUT"), 10.0),
    )
    validate(settings)
    return settings


def validate(s: LdapSettings) -> None:
    """Raise Misconfigured when ``s`` cannot work."""
    if not s.user_dn_template and not s.user_base:
        raise Misconfigured(f"set {PREFIX}USER_DN_TEMPLATE (bind as the user) or {PREFIX}USER_BASE "
                            "(search, then bind)")
    if s.user_dn_template and "{username}" not in s.user_dn_template:
        raise Misconfigured(f"{PREFIX}USER_DN_TEMPLATE must contain {{username}}")
    if s.user_dn_template and "=" not in s.user_dn_template.replace("{username}", "") and not s.user_base:
        raise Misconfigured(f"a {PREFIX}USER_DN_TEMPLATE that is not a DN (user@domain, DOMAIN\\user) needs "
                            f"{PREFIX}USER_BASE to find the user's entry")
    if "{username}" not in s.user_filter:
        raise Misconfigured(f"{PREFIX}USER_FILTER must contain {{username}}")
    if s.group_base and "{dn}" not in s.group_filter and "{username}" not in s.group_filter:
        raise Misconfigured(f"{PREFIX}GROUP_FILTER must contain {{dn}} or {{username}}")
    if bool(s.bind_dn) != bool(s.bind_password):
        raise Misconfigured(f"{PREFIX}BIND_DN and {PREFIX}BIND_PASSWORD go together")
    if s.start_tls and s.url.lower().startswith("ldaps://"):
        raise Misconfigured(f"{PREFIX}START_TLS is for ldap:// URLs; ldaps:// is TLS already")


def authenticate(settings: LdapSettings, username: str, password: str) -> ExternalIdentity | None:
    """The identity the directory vouches for, or None when the username/password do not
    sign in (unknown user, wrong or empty password). Raise Unreachable when the directory
    cannot be reached, Misconfigured when it rejects the settings, ExternalAuthError for
    anything else it answers."""
    username = (username or "").strip()
    if not username or not password:
        return None  # an empty password would be an unauthenticated (anonymous) bind
    if any(ord(c) < 32 or ord(c) == 127 for c in username):
        return None  # no directory has such names; a NUL would end the DN early
    try:
        if settings.user_dn_template:
            return _bind_as_user(settings, username, password)
        return _search_then_bind(settings, username, password)
    except LDAPCommunicationError as exc:
        raise Unreachable(f"LDAP server {settings.url} unreachable: {_reason(exc)}") from None
    except LDAPStartTLSError as exc:
        raise Unreachable(f"LDAP StartTLS with {settings.url} failed: {_reason(exc)}") from None
    except (LDAPInvalidFilterError, LDAPInvalidDnError) as exc:
        raise Misconfigured(f"LDAP settings rejected: {_reason(exc)}") from None
    except LDAPException as exc:
        raise ExternalAuthError(f"LDAP error from {settings.url}: {_reason(exc)}") from None


def role_for(settings: LdapSettings, groups: tuple[str, ...] | list[str]) -> str:
    """The role for a user in ``groups`` (group DNs). A role-map key matches a group by its
    whole DN or by its first RDN value (``cn=stcloud-admins,ou=…`` ↔ ``stcloud-admins``),
    case-insensitively; the most privileged match wins. Raise Refused when nothing maps and
    there is no default role."""
    role_map = tuple((_norm_dn(key), role) for key, role in settings.role_map)
    return pick_role(role_map, settings.default_role, (_group_names(g) for g in groups))


# ---- internals ---------------------------------------------------------------------------

def _norm_dn(dn: str) -> str:
    # the same split on both sides (role-map key and group DN), so an escaped comma is harmless
    return ",".join(part.strip() for part in dn.strip().split(","))


def _group_names(dn: str) -> set[str]:
    names = {_norm_dn(dn)}
    try:
        rdns = parse_dn(dn, escape=False, strip=True)
    except LDAPInvalidDnError:
        return names
    if rdns:
        names.add(rdns[0][1])
    return names


def _server(s: LdapSettings) -> Server:
    tls = None
    if s.uses_tls:
        tls = Tls(validate=ssl.CERT_REQUIRED if s.tls_verify else ssl.CERT_NONE,
                  ca_certs_file=s.ca_file, version=ssl.PROTOCOL_TLS_CLIENT)
    return Server(s.url, tls=tls, get_info=NONE, connect_timeout=s.connect_timeout)


def _connection(s: LdapSettings, server: Server, user: str | None, password: str | None) -> Connection:
    """An open (not yet bound) connection, TLS started when asked."""
    conn = Connection(server, user=user, password=password, authentication=SIMPLE if user else None,
                      receive_timeout=math.ceil(s.timeout),  # ldap3 packs it into an int
                      read_only=True, raise_exceptions=False, auto_referrals=False)
    conn.open()
    if s.start_tls and not conn.start_tls():
        conn.unbind()
        raise Unreachable(f"LDAP StartTLS with {s.url} failed: {conn.result.get('description')}")
    return conn


def _user_bind(s: LdapSettings, server: Server, user: str, password: str) -> Connection | None:
    conn = _connection(s, server, user, password)
    if conn.bind():
        return conn
    code = conn.result.get("result")
    conn.unbind()
    if code in _BAD_CREDENTIALS:
        return None
    if code in _SERVER_DOWN:
        raise Unreachable(f"LDAP server {s.url} unavailable: {conn.result.get('description')}")
    raise ExternalAuthError(f"LDAP bind refused by {s.url}: {conn.result.get('description')} "
                            f"({conn.result.get('message') or code})")


def _bind_name(template: str, username: str) -> str | None:
    if "=" in template.replace("{username}", ""):  # a DN template
        return template.replace("{username}", escape_rdn(username))
    if set(username) & _NOT_IN_BIND_NAME:  # a UPN or DOMAIN\user template
        return None
    return template.replace("{username}", username)


def _bind_as_user(s: LdapSettings, username: str, password: str) -> ExternalIdentity | None:
    bind_name = _bind_name(s.user_dn_template, username)
    if bind_name is None:
        return None
    server = _server(s)
    conn = _user_bind(s, server, bind_name, password)
    if conn is None:
        return None
    try:
        if s.user_base:
            entry = _find_user(s, conn, username)
        else:
            entry = _read_entry(s, conn, bind_name)
        if entry is None:
            raise Misconfigured(f"bound as {bind_name!r} but cannot read that user's entry "
                                f"(check {PREFIX}USER_BASE / {PREFIX}USER_FILTER and read access)")
        return _identity(s, conn, entry, username)
    finally:
        conn.unbind()


def _search_then_bind(s: LdapSettings, username: str, password: str) -> ExternalIdentity | None:
    server = _server(s)
    svc = _connection(s, server, s.bind_dn, s.bind_password)
    try:
        if not svc.bind():
            code = svc.result.get("result")
            if code in _SERVER_DOWN:
                raise Unreachable(f"LDAP server {s.url} unavailable: {svc.result.get('description')}")
            raise Misconfigured(f"the LDAP service account {s.bind_dn or '(anonymous)'} could not bind: "
                                f"{svc.result.get('description')}")
        entry = _find_user(s, svc, username)
        if entry is None:
            return None
        user_conn = _user_bind(s, server, entry["dn"], password)
        if user_conn is None:
            return None
        user_conn.unbind()
        return _identity(s, svc, entry, username)
    finally:
        svc.unbind()


def _attributes(s: LdapSettings) -> list[str]:
    return [s.username_attr, s.email_attr, s.name_attr, "cn", s.member_of_attr]


def _search(s: LdapSettings, conn: Connection, base: str, flt: str, scope, what: str) -> list[dict]:
    ok = conn.search(base, flt, search_scope=scope, attributes=_attributes(s) if what == "user" else ["cn"],
                     size_limit=2 if what == "user" else 1000, time_limit=int(s.timeout))
    code = conn.result.get("result")
    if not ok and code not in (0, 4):  # 4: sizeLimitExceeded (we asked for at most 2 users)
        if code == 32 and scope is not BASE:
            raise Misconfigured(f"LDAP {what} search base {base!r} does not exist")
        if code == 32:
            return []
        if code in _SERVER_DOWN:
            raise Unreachable(f"LDAP server {s.url} unavailable: {conn.result.get('description')}")
        raise Misconfigured(f"LDAP {what} search in {base!r} with {flt!r} failed: "
                            f"{conn.result.get('description')} {conn.result.get('message') or ''}".strip())
    return [r for r in conn.response or [] if r.get("type") == "searchResEntry"]


def _find_user(s: LdapSettings, conn: Connection, username: str) -> dict | None:
    flt = s.user_filter.replace("{username}", escape_filter_chars(username))
    found = _search(s, conn, s.user_base, flt, SUBTREE, "user")
    if not found:
        return None
    if len(found) > 1:
        raise Misconfigured(f"LDAP user filter {flt!r} matches more than one entry; make it unique")
    return found[0]


def _read_entry(s: LdapSettings, conn: Connection, dn: str) -> dict | None:
    found = _search(s, conn, dn, "(objectClass=*)", BASE, "user")
    return found[0] if found else None


def _first(entry: dict, attr: str, prefer: str | None = None) -> str | None:
    values = entry.get("attributes", {}).get(attr)
    if values in (None, [], ""):
        return None
    if not isinstance(values, list):
        values = [values]
    values = [str(v) for v in values if str(v).strip()]
    if prefer is not None:
        for v in values:
            if v.casefold() == prefer.casefold():
                return v
    return values[0] if values else None


def _identity(s: LdapSettings, conn: Connection, entry: dict, typed: str) -> ExternalIdentity:
    dn = entry["dn"]
    username = _first(entry, s.username_attr, prefer=typed) or typed
    if s.group_base:
        flt = (s.group_filter.replace("{dn}", escape_filter_chars(dn))
               .replace("{username}", escape_filter_chars(username)))
        groups = tuple(g["dn"] for g in _search(s, conn, s.group_base, flt, SUBTREE, "group"))
    else:
        raw = entry.get("attributes", {}).get(s.member_of_attr) or []
        groups = tuple(str(g) for g in (raw if isinstance(raw, list) else [raw]))
    return ExternalIdentity(
        username=username,
        email=_first(entry, s.email_attr),
        display_name=_first(entry, s.name_attr) or _first(entry, "cn"),
        groups=groups,
        source=SOURCE,
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
