"""Accounts: sign-in, users, API keys, audit (SPEC §13 Auth). Their validation errors answer
422, as the accounts service's own checks do."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from stcloud.api.types import MAX_USD, Int, Num, Str, blank_none

STATUS = 422
Role = Literal["admin", "member", "viewer"]


class LoginBody(BaseModel):
    username: Str(200) | None = None
    password: Str(1024) | None = Field(None, json_schema_extra={"writeOnly": True})


class PasswordBody(BaseModel):
    current_password: Str(1024) | None = Field(None, json_schema_extra={"writeOnly": True})
    new_password: Str(1024) | None = Field(None, json_schema_extra={"writeOnly": True})


class UserCreateBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    username: Str(64) | None = None
    role: Role = "member"
    password: Annotated[Str(1024) | None, BeforeValidator(blank_none)] = Field(
        None, description="none: one is generated and answered once", json_schema_extra={"writeOnly": True})
    display_name: Str(200) | None = None
    email: Str(320) | None = None


class UserPatchBody(BaseModel):
    """Members not sent keep their value."""

    model_config = ConfigDict(extra="allow")
    role: Role | None = None
    disabled: bool | None = None
    display_name: Str(200) | None = None
    email: Str(320) | None = None
    password: Str(1024) | None = Field(None, json_schema_extra={"writeOnly": True})
    max_concurrent_jobs: Int(0, 10_000) | None = None
    spend_limit_usd: Num(0, MAX_USD) | None = None
    spend_period: Literal["daily", "weekly", "monthly"] | None = None
    spend_action: Literal["warn", "block"] | None = None


class TokenCreateBody(BaseModel):
    name: Str(200) | None = Field(None, description="what the key is for, e.g. 'laptop CLI'")
    expires_in_days: Int(1, 3650) | None = None


class AuditQuery(BaseModel):
    actor: Str(200) | None = None
    action: Str(200) | None = None
    since: Str(64) | None = Field(None, description="ISO 8601 time, e.g. 2026-01-31T00:00:00Z")
    limit: Int(1, 1000) | None = None
    format: Literal["json", "jsonl"] | None = None


class UserView(BaseModel):
    """A user (its limits under ``limits``)."""

    model_config = ConfigDict(extra="allow")
    id: str
    username: str
    display_name: str | None = None
    email: str | None = None
    role: Role
    disabled: bool
    source: str
    has_password: bool
    created_at: str | None
    last_login_at: str | None
    limits: dict[str, Any]


class UserAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")
    user: UserView


class Me(BaseModel):
    """The signed-in actor: a user's record, or (admin token, auth off) a stand-in without
    ``id``; ``source`` says which."""

    model_config = ConfigDict(extra="allow")
    id: str | None
    username: str
    display_name: str | None
    email: str | None
    role: Role
    disabled: bool
    source: str = Field(description="local | ldap | oidc | token | auth-off")


class MeAnswer(BaseModel):
    """``GET /api/cloud/me``."""

    user: Me
    via: Literal["session", "api_key", "admin_token", "auth_off"]


class UserList(BaseModel):
    users: list[UserView]


class UserCreated(UserAnswer):
    """``POST /api/cloud/users``: ``password`` only when it was generated (shown once)."""

    password: str | None = None


class KeyView(BaseModel):
    id: str
    name: str | None
    hint: str | None
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    state: Literal["active", "expired", "revoked"]


class KeyCreated(BaseModel):
    """``POST /api/cloud/tokens``: the key and its token, shown this once."""

    id: str
    token: str
    key: KeyView


class KeyList(BaseModel):
    tokens: list[KeyView]


class AuditRecordView(BaseModel):
    seq: int
    at: str
    actor: str | None
    key_id: str | None
    action: str
    target: str | None
    client_addr: str | None
    outcome: str
    detail: Any = Field(description="the action's details (JSON), or null")
    prev_hash: str | None
    hash: str


class AuditLog(BaseModel):
    """``GET /api/cloud/audit`` (``format=jsonl``: one record per line, oldest first)."""

    records: list[AuditRecordView]
