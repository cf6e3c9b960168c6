"""OpenID Connect sign-in (Authlib): discovery from the issuer URL, the authorization-code
flow with PKCE (S256), state and nonce, the code exchanged at the token endpoint, the ID token
validated (signature against the provider's JWKS, iss, aud/azp, exp/iat, nonce, at_hash), and
claims mapped to an ExternalIdentity.

Two calls, one per route: ``begin_login`` returns the provider URL to redirect to and keeps
what the callback needs in ``store`` (the web session); ``finish_login`` takes the callback's
query arguments. No Flask and no database here (an adapter)."""
from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import requests
from authlib.common.security import is_secure_transport
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from stcloud.accounts.extauth import (
    ExternalAuthError,
    Misconfigured,
    Refused,
    RoleMap,
    Unreachable,
    env_float,
    env_text,
    parse_default_role,
    parse_role_map,
    pick_role,
)
from stcloud.accounts.external import ExternalIdentity

PREFIX = "STCLOUD_OIDC_"
SOURCE = "oidc"
STORE_KEY = "oidc_pending"  # in the web session: {state: {nonce, verifier, redirect_uri, next, at}}
PENDING_TTL = 600  # seconds a started sign-in stays valid
PENDING_MAX = 5  # sign-ins started in other tabs that are kept
USERNAME_CLAIMS = ("preferred_username", "email", "sub")


@dataclass(frozen=True)
class OidcSettings:
    """Read from ``STCLOUD_OIDC_*`` (see docs/accounts-external.md)."""

    issuer: str
    client_id: str
    client_secret: str | None = None  # None: a public client (PKCE only)
    scopes: str = "openid profile email"
    username_claim: str | None = None  # None: preferred_username, then email, then sub
    email_claim: str = "email"
    name_claim: str = "name"
    role_claim: str | None = "groups"  # a dotted path reaches nested claims: realm_access.roles
    role_map: RoleMap = ()
    default_role: str | None = "viewer"  # None: users with no mapped group are refused
    name: str = "OpenID Connect"  # shown on the login button: "Sign in with <name>"
    ca_file: str | None = None
    timeout: float = 10.0
    leeway: int = 60  # seconds of clock skew accepted on exp/iat


def settings_from(config: Mapping) -> OidcSettings | None:
    """OidcSettings from a mapping of ``STCLOUD_OIDC_*`` keys (app config / env), or None
    when ``STCLOUD_OIDC_ISSUER`` is unset. Raise Misconfigured on unusable settings."""
    def get(key: str) -> str | None:
        return env_text(config, PREFIX + key)

    issuer = get("ISSUER")
    if not issuer:
        return None
    defaults = OidcSettings(issuer=issuer, client_id="")
    settings = OidcSettings(
        issuer=issuer,
        client_id=get("CLIENT_ID") or "",
        client_secret=config.get(PREFIX + "CLIENT_SECRET") or None,
        scopes=" ".join((get("SCOPES") or defaults.scopes).replace(",", " ").split()),
        username_claim=get("USERNAME_CLAIM"),
        email_claim=get("EMAIL_CLAIM") or defaults.email_claim,
        name_claim=get("NAME_CLAIM") or defaults.name_claim,
        role_claim=get("ROLE_CLAIM") or defaults.role_claim,
        role_map=parse_role_map(config.get(PREFIX + "ROLE_MAP")),
        default_role=parse_default_role(config.get(PREFIX + "DEFAULT_ROLE")),
        name=get("NAME") or defaults.name,
        ca_file=get("CA_FILE"),
        timeout=env_float(PREFIX + "TIMEOUT", config.get(PREFIX + "TIMEOUT"), 10.0),
    )
    validate(settings)
    return settings


def validate(s: OidcSettings) -> None:
    """Raise Misconfigured when ``s`` cannot work."""
    if not s.client_id:
        raise Misconfigured(f"{PREFIX}CLIENT_ID is required with {PREFIX}ISSUER")
    if not is_secure_transport(s.issuer):
        raise Misconfigured(f"{PREFIX}ISSUER must be an https:// URL (http only on loopback), got {s.issuer!r}")
    if "openid" not in s.scopes.split():
        raise Misconfigured(f"{PREFIX}SCOPES must include openid")


def begin_login(settings: OidcSettings, store: MutableMapping, redirect_uri: str,
                next_url: str | None = None) -> str:
    """The provider URL to send the browser to. Keeps state, nonce and the PKCE verifier in
    ``store`` for ``finish_login``. Raise Unreachable / Misconfigured when discovery fails."""
    meta = discover(settings)
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    client = _client(settings, redirect_uri=redirect_uri)
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], state=state,
                                             code_verifier=verifier, nonce=nonce)
    now = time.time()
    pending = {k: v for k, v in (store.get(STORE_KEY) or {}).items()
               if isinstance(v, dict) and now - v.get("at", 0) < PENDING_TTL}
    pending = dict(sorted(pending.items(), key=lambda kv: kv[1]["at"])[-(PENDING_MAX - 1):])
    pending[state] = {"nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri,
                      "next": next_url, "at": now}
    store[STORE_KEY] = pending
    return url


def pending_next(store: Mapping, args: Mapping) -> str | None:
    """Where the user wanted to go when they started the sign-in ``args`` finishes."""
    entry = (store.get(STORE_KEY) or {}).get(args.get("state") or "")
    return entry.get("next") if isinstance(entry, dict) else None


def finish_login(settings: OidcSettings, store: MutableMapping, args: Mapping) -> ExternalIdentity:
    """The identity from the provider's callback ``args`` (its query string). The started
    sign-in is consumed: a callback works once. Raise Refused (unknown/expired/tampered state,
    the provider's own error, an invalid ID token, missing claims), Unreachable or
    Misconfigured (provider down or rejecting our client) — never returns a partial identity."""
    pending = dict(store.get(STORE_KEY) or {})
    state = args.get("state") or ""
    entry = pending.pop(state, None) if state else None
    store[STORE_KEY] = pending
    if not isinstance(entry, dict) or time.time() - entry.get("at", 0) >= PENDING_TTL:
        raise Refused("this sign-in is unknown or expired (its state does not match); start again")
    if args.get("error"):
        detail = args.get("error_description") or args["error"]
        raise Refused(f"{settings.name} refused the sign-in: {detail}")
    meta = discover(settings)
    if args.get("iss") and args["iss"] != meta["issuer"]:  # RFC 9207: a mix-up attack
        raise Refused(f"the callback came from issuer {args['iss']!r}, not {meta['issuer']!r}")
    code = args.get("code")
    if not code:
        raise Refused("the provider's callback carries no authorization code")
    token = exchange_code(settings, meta, code, entry["redirect_uri"], entry["verifier"])
    claims = validate_id_token(settings, meta, token.get("id_token") or "", entry["nonce"],
                               token.get("access_token"))
    if _needs_userinfo(settings, claims) and meta.get("userinfo_endpoint") and token.get("access_token"):
        claims = {**fetch_userinfo(settings, meta, token["access_token"], claims["sub"]), **claims}
    return identity_from_claims(settings, claims)


def role_for(settings: OidcSettings, groups: tuple[str, ...] | list[str]) -> str:
    """The most privileged role mapped from ``groups`` (the role claim's values, compared
    case-insensitively), else the default role. Raise Refused when there is none."""
    return pick_role(settings.role_map, settings.default_role, ({g} for g in groups))


# ---- the steps, public for tests and for a settings page's "test connection" -----------

def discover(settings: OidcSettings) -> dict:
    """The provider's metadata (OpenID Connect Discovery 1.0), checked against the issuer."""
    url = settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
    meta = _get_json(settings, url, "discovery document")
    issuer = meta.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != settings.issuer.rstrip("/"):
        raise Misconfigured(f"{url} names issuer {issuer!r}, not {settings.issuer!r}")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(meta.get(key), str) or not is_secure_transport(meta[key]):
            raise Misconfigured(f"the provider's {key} is missing or not https: {meta.get(key)!r}")
    methods = meta.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise Misconfigured("the provider does not support PKCE with S256")
    return meta


def exchange_code(settings: OidcSettings, meta: dict, code: str, redirect_uri: str, verifier: str) -> dict:
    client = _client(settings, redirect_uri=redirect_uri, meta=meta)
    try:
        return dict(client.fetch_token(meta["token_endpoint"], grant_type="authorization_code", code=code,
                                       code_verifier=verifier, timeout=settings.timeout))
    except OAuthError as exc:
        if exc.error in ("invalid_client", "unauthorized_client"):
            raise Misconfigured(f"{settings.name} rejected stcloud's client credentials: "
                                f"{exc.description or exc.error}") from None
        raise Refused(f"{settings.name} refused the code: {exc.description or exc.error}") from None
    except requests.RequestException as exc:
        raise Unreachable(f"{settings.name} token endpoint unreachable: {exc}") from None
    except ValueError as exc:  # not JSON / not a token response
        raise ExternalAuthError(f"{settings.name} token endpoint answered nonsense: {exc}") from None
    finally:
        client.close()


def validate_id_token(settings: OidcSettings, meta: dict, id_token: str, nonce: str,
                      access_token: str | None) -> dict:
    """The ID token's claims once its signature (JWKS), iss, aud/azp, exp/iat, nonce and
    at_hash check out; Refused otherwise."""
    if not id_token:
        raise Refused(f"{settings.name} returned no ID token (is the openid scope allowed?)")
    algorithms = [a for a in meta.get("id_token_signing_alg_values_supported") or ["RS256"] if a != "none"]
    keys = KeySet.import_key_set(_get_json(settings, meta["jwks_uri"], "JWKS"))
    try:
        token = jwt.decode(id_token, keys, algorithms=algorithms)
        claims = CodeIDToken(
            token.claims, token.header,
            {"iss": {"essential": True, "value": meta["issuer"]},
             "aud": {"essential": True, "value": settings.client_id},
             "exp": {"essential": True}},
            {"nonce": nonce, "client_id": settings.client_id, "access_token": access_token})
        claims.validate(leeway=settings.leeway)
    except (JoseError, ValueError) as exc:
        raise Refused(f"the ID token from {settings.name} is not valid: {_reason(exc)}") from None
    return dict(claims)


def fetch_userinfo(settings: OidcSettings, meta: dict, access_token: str, sub: str) -> dict:
    info = _get_json(settings, meta["userinfo_endpoint"], "userinfo",
                     headers={"Authorization": f"Bearer {access_token}"})
    if info.get("sub") != sub:  # OIDC Core §5.3.2: otherwise the answer must not be used
        raise Refused("the provider's userinfo is about someone else (sub differs from the ID token)")
    return info


def identity_from_claims(settings: OidcSettings, claims: Mapping) -> ExternalIdentity:
    if settings.username_claim:
        username = _text(_claim(claims, settings.username_claim))
        if not username:
            raise Refused(f"{settings.name} sent no {settings.username_claim!r} claim to use as the username")
    else:
        username = None
        for name in USERNAME_CLAIMS:
            if name == "email" and claims.get("email_verified") is False:
                continue  # an unverified address must not name an account
            username = _text(claims.get(name))
            if username:
                break
        if not username:
            raise Refused(f"{settings.name} sent none of {', '.join(USERNAME_CLAIMS)}")
    return ExternalIdentity(
        username=username,
        email=_text(claims.get(settings.email_claim)),
        display_name=_text(claims.get(settings.name_claim)),
        groups=_groups(_claim(claims, settings.role_claim)) if settings.role_claim else (),
        source=SOURCE,
    )


# ---- internals ---------------------------------------------------------------------------

def _client(settings: OidcSettings, redirect_uri: str, meta: dict | None = None) -> OAuth2Session:
    method = "none"
    if settings.client_secret:
        supported = (meta or {}).get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        method = "client_secret_basic" if "client_secret_basic" in supported else "client_secret_post"
    client = OAuth2Session(settings.client_id, settings.client_secret, scope=settings.scopes,
                           redirect_uri=redirect_uri, code_challenge_method="S256",
                           token_endpoint_auth_method=method)
    if settings.ca_file:
        client.verify = settings.ca_file
    return client


def _get_json(settings: OidcSettings, url: str, what: str, headers: dict | None = None) -> dict:
    try:
        resp = requests.get(url, headers=headers, timeout=settings.timeout, verify=settings.ca_file or True)
    except requests.RequestException as exc:
        raise Unreachable(f"{settings.name} {what} at {url} unreachable: {exc}") from None
    if resp.status_code != 200:
        raise (Refused if what == "userinfo" else Misconfigured)(
            f"{settings.name} {what} at {url} answered HTTP {resp.status_code}")
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Misconfigured(f"{settings.name} {what} at {url} is not a JSON object")
    return data


def _needs_userinfo(settings: OidcSettings, claims: Mapping) -> bool:
    wanted = [settings.email_claim, settings.name_claim]
    wanted.append(settings.username_claim or "preferred_username")
    if settings.role_claim:
        wanted.append(settings.role_claim)
    return any(_claim(claims, name) is None for name in wanted)


def _claim(claims: Mapping, path: str):
    if path in claims:
        return claims[path]
    value = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _groups(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise Refused(f"the role claim is a {type(value).__name__}, not a list of names")
    return tuple(str(v) for v in value if isinstance(v, str | int) and str(v).strip())


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__

