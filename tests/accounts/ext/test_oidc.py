"""OIDC sign-in against a real OpenID provider (npm oidc-provider), driven with requests the
way a browser would: discovery, code flow with PKCE S256, state and nonce, token exchange,
ID token validation, claims → identity → role, and every tampering refused."""
from __future__ import annotations

import base64
import json
import socket
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from stcloud.accounts import oidc
from stcloud.accounts.extauth import Misconfigured, Refused, Unreachable
from tests.accounts.ext import idp as idp_mod
from tests.accounts.ext.idp import sign_in
from tests.daemons import unavailable

ROLE_MAP = "stcloud-admins=admin;stcloud-members=member"


def settings(idp, **kw):
    cfg = {"STCLOUD_OIDC_ISSUER": idp.issuer, "STCLOUD_OIDC_CLIENT_ID": idp.client_id,
           "STCLOUD_OIDC_CLIENT_SECRET": idp.client_secret,
           "STCLOUD_OIDC_SCOPES": "openid profile email groups",
           "STCLOUD_OIDC_ROLE_MAP": ROLE_MAP, "STCLOUD_OIDC_NAME": "Test IdP"}
    cfg.update(kw)
    return oidc.settings_from(cfg)


def login(idp, s, user="erin", store=None, password=None):
    store = {} if store is None else store
    url = oidc.begin_login(s, store, idp.redirect_uri, next_url="/jobs")
    args = sign_in(url, user, password or idp.password(user), idp.redirect_uri)
    return store, args


def test_begin_login_builds_a_pkce_authorization_request(idp):
    s = settings(idp)
    store = {}
    url = oidc.begin_login(s, store, idp.redirect_uri, next_url="/jobs")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(idp.issuer + "/auth?")
    assert q["response_type"] == "code" and q["client_id"] == idp.client_id
    assert q["redirect_uri"] == idp.redirect_uri
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert set(q["scope"].split()) == {"openid", "profile", "email", "groups"}
    pending = store[oidc.STORE_KEY][q["state"]]
    assert pending["nonce"] == q["nonce"] and pending["next"] == "/jobs"
    assert q["code_challenge"] != pending["verifier"]  # the verifier never leaves stcloud
    assert oidc.pending_next(store, {"state": q["state"]}) == "/jobs"


def test_full_login_maps_claims_and_role(idp):
    s = settings(idp)
    store, args = login(idp, s, "erin")
    assert args["iss"] == idp.issuer and "code" in args
    ident = oidc.finish_login(s, store, args)
    assert ident.username == "erin"
    assert ident.email == "erin@idp.test"
    assert ident.display_name == "Erin Admin"
    assert ident.groups == ("stcloud-admins", "staff")
    assert ident.source == "oidc"
    assert oidc.role_for(s, ident.groups) == "admin"
    assert store[oidc.STORE_KEY] == {}  # consumed

    store, args = login(idp, s, "frank")
    frank = oidc.finish_login(s, store, args)
    assert (frank.username, oidc.role_for(s, frank.groups)) == ("frank", "member")


def test_username_falls_back_to_email_and_default_role(idp):
    s = settings(idp)
    store, args = login(idp, s, "gina")
    gina = oidc.finish_login(s, store, args)
    assert gina.username == "gina@idp.test" and gina.groups == ()
    assert oidc.role_for(s, gina.groups) == "viewer"
    with pytest.raises(Refused, match="no group"):
        oidc.role_for(settings(idp, STCLOUD_OIDC_DEFAULT_ROLE="none"), gina.groups)


def test_configured_username_claim(idp):
    s = settings(idp, STCLOUD_OIDC_USERNAME_CLAIM="email")
    store, args = login(idp, s, "erin")
    assert oidc.finish_login(s, store, args).username == "erin@idp.test"
    s = settings(idp, STCLOUD_OIDC_USERNAME_CLAIM="employee_id")
    store, args = login(idp, s, "erin")
    with pytest.raises(Refused, match="employee_id"):
        oidc.finish_login(s, store, args)


def test_public_client_with_pkce_only(idp):
    s = settings(idp, STCLOUD_OIDC_CLIENT_ID=idp.public_client_id, STCLOUD_OIDC_CLIENT_SECRET="")
    assert s.client_secret is None
    store, args = login(idp, s, "frank")
    assert oidc.finish_login(s, store, args).username == "frank"


def test_claims_missing_from_the_id_token_come_from_userinfo(tmp_path_factory):
    try:
        strict = idp_mod.start(tmp_path_factory.mktemp("idp-conform"), conform_id_token_claims=True)
    except idp_mod.IdpUnavailable as exc:
        unavailable("oidc", str(exc))
    try:
        s = settings(strict)
        store, args = login(strict, s, "erin")
        token_claims = _id_token_claims_of(strict, s, store, args)
        assert "groups" not in token_claims and "email" not in token_claims  # only in userinfo
        store, args = login(strict, s, "erin")
        ident = oidc.finish_login(s, store, args)
        assert (ident.username, ident.email, ident.groups) == ("erin", "erin@idp.test", ("stcloud-admins", "staff"))
    finally:
        strict.stop()


def _id_token_claims_of(idp, s, store, args):
    entry = store[oidc.STORE_KEY][args["state"]]
    meta = oidc.discover(s)
    token = oidc.exchange_code(s, meta, args["code"], entry["redirect_uri"], entry["verifier"])
    return json.loads(_b64d(token["id_token"].split(".")[1]))


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---- tampering and errors -------------------------------------------------------------

def test_tampered_or_unknown_state_is_refused(idp):
    s = settings(idp)
    store, args = login(idp, s, "erin")
    bad = {**args, "state": args["state"][:-2] + ("AA" if not args["state"].endswith("AA") else "BB")}
    with pytest.raises(Refused, match="state"):
        oidc.finish_login(s, store, bad)
    with pytest.raises(Refused, match="state"):
        oidc.finish_login(s, store, {k: v for k, v in args.items() if k != "state"})
    with pytest.raises(Refused, match="state"):  # someone else's session: nothing pending here
        oidc.finish_login(s, {}, args)
    assert oidc.finish_login(s, store, args).username == "erin"  # the genuine one still works once
    with pytest.raises(Refused, match="state"):  # ...and only once
        oidc.finish_login(s, store, args)


def test_expired_sign_in_is_refused(idp):
    s = settings(idp)
    store, args = login(idp, s, "erin")
    store[oidc.STORE_KEY][args["state"]]["at"] -= oidc.PENDING_TTL + 1
    with pytest.raises(Refused, match="expired"):
        oidc.finish_login(s, store, args)


def test_wrong_verifier_and_code_replay_are_refused(idp):
    s = settings(idp)
    store, args = login(idp, s, "erin")
    store[oidc.STORE_KEY][args["state"]]["verifier"] = "x" * 86  # PKCE: not the one challenged
    with pytest.raises(Refused, match="refused the code"):
        oidc.finish_login(s, store, args)

    store, args = login(idp, s, "erin")
    pending = dict(store[oidc.STORE_KEY])
    assert oidc.finish_login(s, store, args).username == "erin"
    store[oidc.STORE_KEY] = pending  # the same callback replayed with its state restored
    with pytest.raises(Refused, match="refused the code"):
        oidc.finish_login(s, store, args)


def test_nonce_mismatch_is_refused(idp):
    s = settings(idp)
    store, args = login(idp, s, "erin")
    store[oidc.STORE_KEY][args["state"]]["nonce"] = "another-nonce"
    with pytest.raises(Refused, match="nonce"):
        oidc.finish_login(s, store, args)


def test_id_token_signature_issuer_and_audience_are_checked(idp):
    s = settings(idp)
    store, args = login(idp, s, "frank")
    entry = store[oidc.STORE_KEY][args["state"]]
    meta = oidc.discover(s)
    token = oidc.exchange_code(s, meta, args["code"], entry["redirect_uri"], entry["verifier"])
    id_token, access = token["id_token"], token["access_token"]
    claims = oidc.validate_id_token(s, meta, id_token, entry["nonce"], access)
    assert claims["sub"] == "frank" and claims["aud"] == idp.client_id

    header, payload, sig = id_token.split(".")
    forged = json.loads(_b64d(payload))
    forged["groups"] = ["stcloud-admins"]
    tampered = ".".join([header, _b64e(json.dumps(forged).encode()), sig])
    with pytest.raises(Refused, match="not valid"):
        oidc.validate_id_token(s, meta, tampered, entry["nonce"], access)
    unsigned = ".".join([_b64e(b'{"alg":"none"}'), _b64e(json.dumps(forged).encode()), ""])
    with pytest.raises(Refused, match="not valid"):
        oidc.validate_id_token(s, meta, unsigned, entry["nonce"], access)
    with pytest.raises(Refused, match="not valid"):  # the token was issued to another client
        oidc.validate_id_token(replace(s, client_id="someone-else"), meta, id_token, entry["nonce"], access)
    with pytest.raises(Refused, match="not valid"):
        oidc.validate_id_token(s, {**meta, "issuer": "http://127.0.0.1:1"}, id_token, entry["nonce"], access)
    with pytest.raises(Refused, match="not valid"):  # at_hash binds the access token
        oidc.validate_id_token(s, meta, id_token, entry["nonce"], access + "x")
    with pytest.raises(Refused, match="not valid"):  # expired (beyond the leeway)
        oidc.validate_id_token(replace(s, leeway=-3600), meta, id_token, entry["nonce"], access)


def test_provider_error_and_mixup_are_refused(idp):
    s = settings(idp)
    store = {}
    url = oidc.begin_login(s, store, idp.redirect_uri)
    state = parse_qs(urlsplit(url).query)["state"][0]
    with pytest.raises(Refused, match="access_denied|aborted"):
        oidc.finish_login(s, store, {"state": state, "error": "access_denied",
                                     "error_description": "End-User aborted interaction"})
    store, args = login(idp, s, "erin")
    with pytest.raises(Refused, match="issuer"):
        oidc.finish_login(s, store, {**args, "iss": "https://evil.example"})


def test_wrong_password_at_the_provider_never_reaches_stcloud(idp):
    with pytest.raises(AssertionError, match="refused the login"):
        login(idp, settings(idp), "erin", password="wrong")


def test_wrong_client_secret_is_a_misconfiguration(idp):
    s = settings(idp, STCLOUD_OIDC_CLIENT_SECRET="not-the-secret")
    store, args = login(idp, s, "erin")
    with pytest.raises(Misconfigured, match="client credentials"):
        oidc.finish_login(s, store, args)


def test_unreachable_issuer_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = oidc.settings_from({"STCLOUD_OIDC_ISSUER": f"http://127.0.0.1:{port}", "STCLOUD_OIDC_CLIENT_ID": "x"})
    with pytest.raises(Unreachable, match=f"127.0.0.1:{port}"):
        oidc.begin_login(s, {}, "http://127.0.0.1/cb")


def test_issuer_mismatch_in_discovery_is_a_misconfiguration(idp):
    s = settings(idp, STCLOUD_OIDC_ISSUER=idp.issuer.replace("127.0.0.1", "localhost"))
    with pytest.raises(Misconfigured, match="names issuer"):
        oidc.begin_login(s, {}, idp.redirect_uri)


@pytest.mark.parametrize("cfg, match", [
    ({"STCLOUD_OIDC_ISSUER": "https://id.example"}, "CLIENT_ID"),
    ({"STCLOUD_OIDC_ISSUER": "http://id.example", "STCLOUD_OIDC_CLIENT_ID": "c"}, "https"),
    ({"STCLOUD_OIDC_ISSUER": "https://id.example", "STCLOUD_OIDC_CLIENT_ID": "c", "STCLOUD_OIDC_SCOPES": "email"},
     "openid"),
    ({"STCLOUD_OIDC_ISSUER": "https://id.example", "STCLOUD_OIDC_CLIENT_ID": "c",
      "STCLOUD_OIDC_ROLE_MAP": "{\"g\": \"god\"}"}, "not one of"),
])
def test_bad_settings_are_refused_clearly(cfg, match):
    with pytest.raises(Misconfigured, match=match):
        oidc.settings_from(cfg)


def test_not_configured_is_none_and_nested_role_claims_work():
    assert oidc.settings_from({}) is None
    s = oidc.settings_from({"STCLOUD_OIDC_ISSUER": "https://kc.example/realms/x", "STCLOUD_OIDC_CLIENT_ID": "c",
                            "STCLOUD_OIDC_ROLE_CLAIM": "realm_access.roles",
                            "STCLOUD_OIDC_ROLE_MAP": "stcloud-admin=admin"})
    ident = oidc.identity_from_claims(s, {"sub": "1", "preferred_username": "kim",
                                          "realm_access": {"roles": ["offline_access", "stcloud-admin"]}})
    assert ident.groups == ("offline_access", "stcloud-admin")
    assert oidc.role_for(s, ident.groups) == "admin"
    unverified = oidc.identity_from_claims(s, {"sub": "u-42", "email": "boss@corp", "email_verified": False})
    assert unverified.username == "u-42"


def test_discovery_talks_to_the_real_provider(idp):
    meta = oidc.discover(settings(idp))
    assert meta["issuer"] == idp.issuer
    assert "S256" in meta["code_challenge_methods_supported"]
    assert requests.get(meta["jwks_uri"], timeout=5).json()["keys"][0]["kty"] == "RSA"
