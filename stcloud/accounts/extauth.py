"""What LDAP and OIDC sign-in share: their errors, group → role mapping, env parsing.

No Flask and no database here: the web layer turns these errors into responses."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

ROLES = ("admin", "member", "viewer")  # most privileged first


class ExternalAuthError(Exception):
    """Sign-in through a directory or identity provider failed for a reason other than bad
    credentials (those return None / are refused without this)."""


class Unreachable(ExternalAuthError):
    """The directory or identity provider could not be reached (network, TLS, timeout)."""


class Misconfigured(ExternalAuthError):
    """The settings are incomplete or rejected by the server (bad service account, filter...)."""


class Refused(ExternalAuthError):
    """The user proved who they are but may not sign in (no mapped group and no default role,
    the provider denied the request, a tampered or expired login state...)."""


RoleMap = tuple[tuple[str, str], ...]


def parse_role_map(text: str | Mapping | None) -> RoleMap:
    """``group=role;group=role`` (a DN may contain ``=`` and ``,``: the role is after the
    last ``=``) or a JSON object ``{"group": "role"}``. Raise Misconfigured on a bad role."""
    if not text:
        return ()
    if isinstance(text, Mapping):
        items = list(text.items())
    elif text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise Misconfigured(f"role map is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Misconfigured("role map JSON must be an object {\"group\": \"role\"}")
        items = list(data.items())
    else:
        items = []
        for entry in text.split(";"):
            if not entry.strip():
                continue
            group, sep, role = entry.rpartition("=")
            if not sep or not group.strip():
                raise Misconfigured(f"role map entry {entry.strip()!r} is not group=role")
            items.append((group, role))
    out = []
    for group, role in items:
        role = str(role).strip().lower()
        if role not in ROLES:
            raise Misconfigured(f"role map: {role!r} for {str(group).strip()!r} is not one of {', '.join(ROLES)}")
        out.append((str(group).strip(), role))
    return tuple(out)


def parse_default_role(text: str | None, fallback: str | None = "viewer") -> str | None:
    """The role of a user in no mapped group; ``none`` (or empty) refuses such users."""
    if text is None:
        return fallback
    role = text.strip().lower()
    if role in ("", "none"):
        return None
    if role not in ROLES:
        raise Misconfigured(f"default role {text!r} is not one of {', '.join(ROLES)} or none")
    return role


def pick_role(role_map: RoleMap, default_role: str | None, names: Iterable[Iterable[str]]) -> str:
    """The most privileged role mapped from any group (each group given as its set of names,
    compared case-insensitively), else ``default_role``; Refused when there is none."""
    wanted = {g.casefold(): role for g, role in role_map}
    found = {wanted[n.casefold()] for group in names for n in group if n.casefold() in wanted}
    for role in ROLES:
        if role in found:
            return role
    if default_role:
        return default_role
    raise Refused("you are in no group that may sign in to stcloud")


def env_text(config: Mapping, key: str) -> str | None:
    """``config[key]`` as a stripped string; None when missing or blank."""
    value = config.get(key)
    if value is None:
        return None
    return str(value).strip() or None


def env_bool(value: str | bool | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise Misconfigured(f"{value!r} is not a boolean (true/false)")


def env_float(name: str, value: str | float | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise Misconfigured(f"{name}={value!r} is not a number") from None
    if out <= 0:
        raise Misconfigured(f"{name} must be positive")
    return out
