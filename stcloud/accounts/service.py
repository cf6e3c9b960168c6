"""Accounts: users, password and external sign-in, API keys, one-time login links, and the
first-start admin. Services own their transactions; every state change is audited here.

Raises: BadRequest/ValidationError (bad input), Unauthorized (bad credentials), Forbidden
(disabled account), NotFound, Conflict (duplicate username, the last admin).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import flask_login
from flask import current_app, g
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from stcloud import db
from stcloud.accounts import audit, passwords, scope
from stcloud.accounts.external import ExternalIdentity
from stcloud.costs import user_limits
from stcloud.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationError,
)
from stcloud.models import ApiKey, Job, LoginLink, User, utcnow
from stcloud.timeutil import iso_z

log = logging.getLogger(__name__)

KEY_PREFIX = "stc_"
INITIAL_ADMIN = "admin"
INITIAL_PASSWORD_FILE = "initial-admin-password"
LOGIN_LINK_TTL = timedelta(minutes=15)
KEY_TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often
MAX_KEY_DAYS = 3650
# app.extensions key: callables (username, password) -> (ExternalIdentity, role) | None that
# the password form tries for names that are not local accounts (LDAP plugs in here).
PASSWORD_AUTHENTICATORS = "stcloud.password_authenticators"
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")


# ---- the session user (Flask-Login) ------------------------------------------------------

@dataclass(frozen=True)
class SessionUser(flask_login.UserMixin):
    """What Flask-Login keeps per request. The id carries ``session_version``: changing a
    password or disabling the account bumps it, which ends every other session."""

    user_id: str
    username: str
    role: str
    session_version: int

    def get_id(self) -> str:
        return f"{self.user_id}:{self.session_version}"

    @classmethod
    def of(cls, user: User) -> SessionUser:
        return cls(user.id, user.username, user.role, user.session_version)


def load_session_user(session_id: str) -> SessionUser | None:
    user_id, _, version = (session_id or "").partition(":")
    with db.session() as s:
        user = s.get(User, user_id)
        if user is None or user.disabled or str(user.session_version) != version:
            return None
        return SessionUser.of(user)


def actor_of(user: User | SessionUser, key_id: str | None = None) -> scope.Actor:
    uid = user.user_id if isinstance(user, SessionUser) else user.id
    return scope.Actor(name=user.username, role=user.role, user_id=uid, key_id=key_id)


def _start_session(user: User) -> None:
    flask_login.login_user(SessionUser.of(user))


# ---- users --------------------------------------------------------------------------------

def user_to_dict(u: User) -> dict:
    return {"id": u.id, "username": u.username, "display_name": u.display_name, "email": u.email,
            "role": u.role, "disabled": u.disabled, "source": u.source,
            "has_password": u.password_hash is not None, "created_at": iso_z(u.created_at),
            "last_login_at": iso_z(u.last_login_at), "limits": user_limits.to_dict(u)}


def normalize_username(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("username is required", extra={"field": "username"})
    name = value.strip().lower()
    if not _USERNAME.match(name):
        raise ValidationError("username must be 1-64 characters: letters, digits, '.', '_', '@' or '-', "
                              "starting with a letter or digit", extra={"field": "username"})
    return name


def _role(value) -> str:
    if value not in scope.ROLES:
        raise ValidationError(f"role must be one of {', '.join(scope.ROLES)}", extra={"field": "role"})
    return value


def _text(value, field: str, limit: int) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError(f"{field} must be a string of at most {limit} characters", extra={"field": field})
    return value.strip() or None


def _email(value) -> str | None:
    email = _text(value, "email", 320)
    if email is not None and not re.match(r"^[^@\s]+@[^@\s]+$", email):
        raise ValidationError("email must look like name@example.com", extra={"field": "email"})
    return email


def _new_password(value) -> str:
    reason = passwords.check_strength(value)
    if reason:
        raise ValidationError(reason, extra={"field": "password"})
    return value


def _by_name(s: Session, username: str) -> User:
    user = s.scalars(select(User).where(User.username == str(username).strip().lower())).first()
    if user is None:
        raise NotFound(f"user {username} not found")
    return user


def list_users() -> list[dict]:
    with db.session() as s:
        return [user_to_dict(u) for u in s.scalars(select(User).order_by(User.username))]


def get_user(username: str) -> dict:
    with db.session() as s:
        return user_to_dict(_by_name(s, username))


def get_user_by_id(user_id: str) -> User | None:
    with db.session() as s:
        return s.get(User, user_id)


def owner_name(user_id: str | None) -> str | None:
    """The username of an owner id, for pages (jobs, workers, keys): None for no owner, the
    id itself for a deleted user. Looked up once per request and id."""
    if not user_id:
        return None
    names = g.setdefault("stcloud_owner_names", {})
    if user_id not in names:
        with db.session() as s:
            names[user_id] = s.scalar(select(User.username).where(User.id == user_id)) or user_id
    return names[user_id]


def count_users() -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(User)) or 0)


def create_user(username, role="member", password=None, display_name=None, email=None) -> tuple[dict, str | None]:
    """Create a local account. Returns (user, the generated password or None)."""
    name = normalize_username(username)
    role = _role(role)
    generated = None
    if password in (None, ""):
        generated = password = passwords.generate()
    _new_password(password)
    user = User(username=name, role=role, display_name=_text(display_name, "display_name", 200),
                email=_email(email), password_hash=passwords.hash_password(password), source="local",
                disabled=False, session_version=1)
    try:
        with db.transaction() as s:
            if s.scalars(select(User.id).where(User.username == name)).first():
                raise Conflict(f"user {name} already exists")
            s.add(user)
    except IntegrityError:
        raise Conflict(f"user {name} already exists") from None
    audit.record("user.create", target=name, detail={"role": role})
    return user_to_dict(user), generated


def _enabled_admins(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(User)
                        .where(User.role == scope.ADMIN, User.disabled.is_(False))) or 0)


def update_user(username: str, changes: dict, *, home: Path | None = None) -> dict:
    """Change role, disabled, display_name, email or password (admin). Refuses to leave no
    enabled admin."""
    allowed = {"role", "disabled", "display_name", "email", "password", *user_limits.FIELDS}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    if "disabled" in changes and not isinstance(changes["disabled"], bool):
        raise ValidationError("disabled must be true or false", extra={"field": "disabled"})
    with db.transaction() as s:
        user = _by_name(s, username)
        was_admin = user.role == scope.ADMIN and not user.disabled
        if "role" in changes:
            user.role = _role(changes["role"])
        if "disabled" in changes:
            if changes["disabled"] and not user.disabled:
                user.session_version += 1
            user.disabled = changes["disabled"]
        if "display_name" in changes:
            user.display_name = _text(changes["display_name"], "display_name", 200)
        if "email" in changes:
            user.email = _email(changes["email"])
        for key, value in user_limits.validate(changes).items():
            setattr(user, key, value)
        if "password" in changes:
            if user.source != "local":
                raise ValidationError(f"{user.username} signs in through {user.source}; set the password there",
                                      extra={"field": "password"})
            user.password_hash = passwords.hash_password(_new_password(changes["password"]))
            user.password_changed_at = utcnow()
            user.session_version += 1
        s.flush()
        if was_admin and _enabled_admins(s) == 0:
            raise Conflict("this is the last enabled admin: make another admin first")
        result = user_to_dict(user)
    if "password" in changes:
        _forget_initial_password(result["username"], home)
    detail = {k: changes[k] for k in ("role", "disabled", *user_limits.FIELDS) if k in changes}
    detail.update({k: "changed" for k in ("display_name", "email", "password") if k in changes})
    if set(changes) == {"role"}:
        action = "user.role"
    elif set(changes) <= set(user_limits.FIELDS):
        action = "user.limits"
    elif set(changes) == {"disabled"}:
        action = "user.disable" if changes["disabled"] else "user.enable"
    else:
        action = "user.update"
    audit.record(action, target=result["username"], detail=detail)
    return result


def delete_user(username: str) -> None:
    """Delete an account and its API keys (its jobs stay, visible to admins)."""
    with db.transaction() as s:
        user = _by_name(s, username)
        name = user.username
        was_admin = user.role == scope.ADMIN and not user.disabled
        s.delete(user)
        s.flush()
        if was_admin and _enabled_admins(s) == 0:
            raise Conflict("this is the last enabled admin: make another admin first")
    audit.record("user.delete", target=name)


def job_owner(job_id: str) -> str | None:
    with db.session() as s:
        return s.scalar(select(Job.owner_id).where(Job.id == job_id))


# ---- signing in ---------------------------------------------------------------------------

def login_password(username, password) -> User:
    """Check a username and password, start the session, audit either way.

    Raises Unauthorized (same answer for an unknown user and a wrong password), Forbidden
    (disabled account).
    """
    name = str(username or "").strip().lower()
    with db.session() as s:
        user = s.scalars(select(User).where(User.username == name)).first() if name else None
        stored = user.password_hash if user is not None else None
    if name and (user is None or user.source != "local"):
        for authenticate in current_app.extensions.get(PASSWORD_AUTHENTICATORS, ()):
            found = authenticate(name, str(password or ""))
            if found is not None:
                identity, role = found
                return login_external(identity, role)
    if not passwords.verify(stored, str(password or "")):
        audit.record("auth.login", target=name or None, outcome="denied", actor="anonymous",
                     detail={"reason": "bad credentials", "method": "password"})
        raise Unauthorized("invalid username or password")
    if user.disabled:
        audit.record("auth.login", target=name, outcome="denied", actor=actor_of(user),
                     detail={"reason": "disabled", "method": "password"})
        raise Forbidden("this account is disabled; ask an admin")
    with db.transaction() as s:
        row = s.get(User, user.id)
        row.last_login_at = utcnow()
        if passwords.needs_rehash(row.password_hash):
            row.password_hash = passwords.hash_password(str(password))
        user = row
    _start_session(user)
    audit.record("auth.login", target=name, actor=actor_of(user), detail={"method": "password"})
    return user


def login_external(identity: ExternalIdentity, role: str) -> User:
    """Sign in someone an external directory (LDAP, OIDC) vouched for.

    Creates the account on first login (no local password), else updates e-mail, display
    name and role from the directory. Refuses disabled accounts (Forbidden) and local
    accounts of the same name (Conflict: an external login must not take over a password
    account). Starts the Flask-Login session and audits.
    """
    name = normalize_username(identity.username)
    role = _role(role)
    with db.transaction() as s:
        user = s.scalars(select(User).where(User.username == name)).first()
        if user is None:
            user = User(username=name, role=role, source=identity.source, disabled=False,
                        session_version=1, password_hash=None)
            s.add(user)
            created = True
        else:
            created = False
            if user.source != identity.source:
                raise Conflict(f"user {name} exists as a {user.source} account; "
                               f"it cannot sign in through {identity.source}")
        if user.disabled:
            disabled = True
        else:
            disabled = False
            user.email = _email(identity.email) if identity.email else user.email
            user.display_name = _text(identity.display_name, "display_name", 200) or user.display_name
            user.role = role
            user.last_login_at = utcnow()
    if disabled:
        audit.record("auth.login", target=name, outcome="denied", actor=actor_of(user),
                     detail={"reason": "disabled", "method": identity.source})
        raise Forbidden("this account is disabled; ask an admin")
    _start_session(user)
    if created:
        audit.record("user.create", target=name, actor=actor_of(user),
                     detail={"role": role, "source": identity.source})
    audit.record("auth.login", target=name, actor=actor_of(user),
                 detail={"method": identity.source, "groups": list(identity.groups)[:20]})
    return user


def logout() -> None:
    actor = scope.current()
    flask_login.logout_user()
    if actor is not None:
        audit.record("auth.logout", target=actor.name, actor=actor)


def change_own_password(user_id: str, current: str, new: str, *, home: Path | None = None) -> None:
    """Raises Unauthorized (wrong current password), ValidationError (weak new one)."""
    _new_password(new)
    with db.session() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("user not found")
        stored = user.password_hash
    if stored is None:
        raise BadRequest(f"{user.username} signs in through {user.source}; change the password there")
    if not passwords.verify(stored, str(current or "")):  # the request's refusal is audited by the web hook
        raise Unauthorized("the current password is not right")
    with db.transaction() as s:
        row = s.get(User, user_id)
        row.password_hash = passwords.hash_password(new)
        row.password_changed_at = utcnow()
        row.session_version += 1
        user = row
    _start_session(user)  # this session carries on; the others end
    _forget_initial_password(user.username, home)
    audit.record("user.password", target=user.username)


# ---- API keys -----------------------------------------------------------------------------

def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_to_dict(k: ApiKey) -> dict:
    now = utcnow()
    state = "revoked" if k.revoked_at else "expired" if k.expires_at and k.expires_at <= now else "active"
    return {"id": k.id, "name": k.name, "hint": k.hint, "created_at": iso_z(k.created_at),
            "expires_at": iso_z(k.expires_at), "last_used_at": iso_z(k.last_used_at),
            "revoked_at": iso_z(k.revoked_at), "state": state}


def create_key(user_id: str, name, expires_in_days=None) -> tuple[dict, str]:
    """Returns (key, the token — shown once)."""
    label = _text(name, "name", 200)
    if not label:
        raise ValidationError("name is required (what the key is for, e.g. 'laptop CLI')", extra={"field": "name"})
    expires_at = None
    if expires_in_days is not None:
        if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int) \
                or not 1 <= expires_in_days <= MAX_KEY_DAYS:
            raise ValidationError(f"expires_in_days must be a whole number from 1 to {MAX_KEY_DAYS}",
                                  extra={"field": "expires_in_days"})
        expires_at = utcnow() + timedelta(days=expires_in_days)
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(user_id=user_id, name=label, token_hash=_digest(token), hint=token[:10],
                 expires_at=expires_at)
    with db.transaction() as s:
        if s.get(User, user_id) is None:
            raise NotFound("user not found")
        s.add(key)
    audit.record("token.create", target=key.id, detail={"name": label, "expires_in_days": expires_in_days})
    return key_to_dict(key), token


def list_keys(user_id: str) -> list[dict]:
    with db.session() as s:
        rows = s.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc()))
        return [key_to_dict(k) for k in rows]


def revoke_key(user_id: str, key_id: str) -> dict:
    """Revoke one of ``user_id``'s keys (idempotent). Someone else's key is NotFound."""
    with db.transaction() as s:
        key = s.get(ApiKey, key_id)
        if key is None or key.user_id != user_id:
            raise NotFound(f"API key {key_id} not found")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        result = key_to_dict(key)
    audit.record("token.revoke", target=key_id)
    return result


def resolve_key(token: str) -> tuple[User, str]:
    """The user behind an API key and the key id. Raises Unauthorized naming why."""
    now = utcnow()
    with db.session() as s:
        key = s.scalars(select(ApiKey).where(ApiKey.token_hash == _digest(token))).first()
        if key is None:
            raise Unauthorized("invalid API key")
        if key.revoked_at is not None:
            raise Unauthorized("this API key was revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("this API key has expired; create a new one")
        user = s.get(User, key.user_id)
        if user is None or user.disabled:
            raise Unauthorized("the account of this API key is disabled")
        key_id, stale = key.id, key.last_used_at is None or now - key.last_used_at >= KEY_TOUCH_EVERY
    if stale:
        with db.transaction() as s:
            row = s.get(ApiKey, key_id)
            if row is not None:
                row.last_used_at = now
    return user, key_id


# ---- one-time login links ------------------------------------------------------------------

def create_login_link(username: str | None = None, ttl: timedelta = LOGIN_LINK_TTL) -> str:
    """A single-use sign-in token for ``username`` (default: the first enabled admin)."""
    with db.transaction() as s:
        if username:
            user = _by_name(s, username)
        else:
            user = s.scalars(select(User).where(User.role == scope.ADMIN, User.disabled.is_(False))
                             .order_by(User.created_at)).first()
            if user is None:
                raise NotFound("there is no enabled admin account")
        token = secrets.token_urlsafe(32)
        s.add(LoginLink(token_hash=_digest(token), user_id=user.id, expires_at=utcnow() + ttl))
    audit.record("auth.login_link.create", target=user.username, actor="system")
    return token


def login_with_link(token: str) -> User:
    """Consume a login link and start the session. Raises Unauthorized."""
    now = utcnow()
    with db.transaction() as s:
        link = s.get(LoginLink, _digest(token or ""))
        if link is None or link.used_at is not None or link.expires_at <= now:
            reason = "unknown" if link is None else "used" if link.used_at else "expired"
            user = None
        else:
            link.used_at = now
            user = s.get(User, link.user_id)
            reason = "disabled" if user is None or user.disabled else None
            if reason is None:
                user.last_login_at = now
    if reason is not None:
        audit.record("auth.login", outcome="denied", actor="anonymous", detail={"method": "link", "reason": reason})
        raise Unauthorized("this sign-in link is not valid any more (links work once, for 15 minutes); "
                           "sign in with your password or ask for a new link")
    _start_session(user)
    audit.record("auth.login", target=user.username, actor=actor_of(user), detail={"method": "link"})
    return user


# ---- first start --------------------------------------------------------------------------

def initial_password_path(home: Path) -> Path:
    return Path(home) / INITIAL_PASSWORD_FILE


def _forget_initial_password(username: str, home: Path | None) -> None:
    if home is not None and username == INITIAL_ADMIN:
        initial_password_path(home).unlink(missing_ok=True)


def ensure_initial_admin(home: Path) -> str | None:
    """With no account at all, create ``admin`` with a random password, write it to
    ``STCLOUD_HOME/initial-admin-password`` (0600) and return it; else None.

    Safe to call from every process: a concurrent creator loses on the unique username.
    Before the database is migrated it does nothing.
    """
    try:
        if count_users() > 0:
            return None
    except (OperationalError, ProgrammingError):
        return None  # not migrated yet: `stcloud serve` calls again after upgrading
    password = passwords.generate()
    user = User(username=INITIAL_ADMIN, role=scope.ADMIN, display_name="Administrator",
                password_hash=passwords.hash_password(password), source="local", disabled=False,
                session_version=1)
    try:
        with db.transaction() as s:
            if s.scalar(select(func.count()).select_from(User)):
                return None
            s.add(user)
    except IntegrityError:
        return None
    path = initial_password_path(home)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    os.chmod(path, 0o600)
    audit.record("user.create", target=INITIAL_ADMIN, actor="system",
                 detail={"role": scope.ADMIN, "reason": "first start"})
    return password

