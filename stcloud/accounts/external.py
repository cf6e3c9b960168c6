"""Who an external directory or identity provider says signed in (LDAP, OIDC)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExternalIdentity:
    username: str
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]
    source: str
