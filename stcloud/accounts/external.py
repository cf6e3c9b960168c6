"""What an external sign-in (LDAP, OIDC) hands to ``service.login_external``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExternalIdentity:
    username: str
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]
    source: str  # "ldap", "oidc"
