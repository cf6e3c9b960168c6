"""External sign-in, the service the routes call: LDAP behind the password form, OIDC behind
its two routes, both ending in ``accounts.service.login_external`` (account created on the
first sign-in with the mapped role, session started, audited).

Errors the sign-in forms show: Unauthorized (bad credentials), Forbidden (no role for this
user, refused by the provider, disabled account), SignInUnavailable (the directory or
provider cannot be reached or is misconfigured: 503, shown on the login form too)."""
from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping

from flask import current_app, url_for

from stcloud.accounts import audit, extconfig, ldap, oidc
from stcloud.accounts import service as accounts
from stcloud.accounts.extauth import ExternalAuthError, Refused
from stcloud.accounts.external import ExternalIdentity
from stcloud.errors import Forbidden, NotFound, Unauthorized, ValidationError
from stcloud.providers import config as provider_config

log = logging.getLogger(__name__)
CALLBACK_PATH = "/auth/oidc/callback"


class SignInUnavailable(Unauthorized):
    """The directory or identity provider cannot decide right now (down, misconfigured):
    nobody is signed in, and the login form says why."""

    status, title = 503, "Sign-in unavailable"


def _denied(method: str, name: str | None, reason: str) -> None:
    audit.record("auth.login", target=name or None, outcome="denied", actor="anonymous",
                 detail={"reason": reason[:200], "method": method})


def _usable(method: str, identity: ExternalIdentity) -> ExternalIdentity:
    """Refuse (Forbidden, audited) a name that cannot be an stcloud username."""
    try:
        accounts.normalize_username(identity.username)
    except ValidationError as exc:
        reason = f"the name {identity.username!r} from {method.upper()} cannot be an stcloud username: {exc.detail}"
        _denied(method, None, reason)
        raise Forbidden(reason) from None
    return identity


def _unavailable(method: str, name: str | None, exc: ExternalAuthError) -> SignInUnavailable:
    log.warning("%s sign-in failed: %s", method, exc)
    audit.record("auth.login", target=name or None, outcome="failed", actor="anonymous",
                 detail={"reason": str(exc)[:200], "method": method})
    what = "the directory" if method == "ldap" else "the identity provider"
    return SignInUnavailable(f"{what} could not check this sign-in: {exc}")


# ---- LDAP: a password authenticator for accounts.service.login_password -----------------

def ldap_authenticator(username: str, password: str) -> tuple[ExternalIdentity, str] | None:
    """(identity, role) when the LDAP directory accepts ``username``/``password``; None when
    LDAP is off or the credentials are wrong. Raises Forbidden (no role), SignInUnavailable."""
    try:
        settings = extconfig.effective("ldap")
        if settings is None:
            return None
        identity = ldap.authenticate(settings, username, password)
        if identity is None:
            return None
        return _usable("ldap", identity), ldap.role_for(settings, identity.groups)
    except Refused as exc:
        _denied("ldap", username, str(exc))
        raise Forbidden(str(exc)) from None
    except ExternalAuthError as exc:
        raise _unavailable("ldap", username, exc) from None


# ---- OIDC ---------------------------------------------------------------------------------

def oidc_settings() -> oidc.OidcSettings | None:
    """The OIDC settings in effect (None: off); a broken configuration counts as off here
    and is reported on the Settings page."""
    try:
        return extconfig.effective("oidc")
    except ExternalAuthError as exc:
        log.warning("OIDC sign-in is misconfigured: %s", exc)
        return None


def redirect_uri() -> str:
    """The callback URL registered at the provider: the instance's public URL when set (a
    proxy may hide the real host), else this request's own host."""
    public = provider_config.get_config("replicate").get("public_url") or current_app.config.get("STCLOUD_PUBLIC_URL")
    if public:
        return public.rstrip("/") + CALLBACK_PATH
    return url_for("external_auth.oidc_callback", _external=True)


def begin_oidc(store: MutableMapping, next_url: str) -> str:
    """The provider URL to redirect to. Raises NotFound (OIDC off), SignInUnavailable."""
    settings = oidc_settings()
    if settings is None:
        raise NotFound("OpenID Connect sign-in is not configured")
    try:
        return oidc.begin_login(settings, store, redirect_uri(), next_url=next_url)
    except ExternalAuthError as exc:
        raise _unavailable("oidc", None, exc) from None


def finish_oidc(store: MutableMapping, args: Mapping) -> str:
    """Sign in from the provider's callback; returns where to go next. Raises NotFound (OIDC
    off), Forbidden (refused: state, provider, token, role, disabled account), Conflict (a
    local account of that name), SignInUnavailable."""
    settings = oidc_settings()
    if settings is None:
        raise NotFound("OpenID Connect sign-in is not configured")
    next_url = oidc.pending_next(store, args) or "/"
    try:
        identity = oidc.finish_login(settings, store, args)
        role = oidc.role_for(settings, identity.groups)
    except Refused as exc:
        _denied("oidc", None, str(exc))
        raise Forbidden(str(exc)) from None
    except ExternalAuthError as exc:
        raise _unavailable("oidc", None, exc) from None
    accounts.login_external(_usable("oidc", identity), role)
    return next_url


def login_method() -> dict | None:
    """The "Sign in with …" button for the login page, when OIDC is on."""
    settings = oidc_settings()
    if settings is None:
        return None
    return {"label": f"Sign in with {settings.name}", "url": url_for("external_auth.oidc_login")}
