"""A real OpenID provider (npm ``oidc-provider``, pinned in oidc_provider/package.json) on
loopback for the OIDC sign-in tests: one confidential client and one public client (both
PKCE-only) whose redirect URI is on a port chosen up front for the stcloud server, and two
accounts with a ``groups`` claim. Its login page checks passwords; consent is implicit."""
from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests

HERE = Path(__file__).resolve().parent / "oidc_provider"
SERVER_JS = HERE / "server.mjs"
CALLBACK_PATH = "/auth/oidc/callback"


class IdpUnavailable(RuntimeError):
    pass


@dataclass
class Idp:
    issuer: str
    client_id: str
    client_secret: str
    public_client_id: str
    rp_port: int  # the stcloud test server must listen here (the registered redirect URI)
    accounts: dict[str, dict] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.rp_port}{CALLBACK_PATH}"

    def password(self, user: str) -> str:
        return self.accounts[user]["password"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workdir: Path, conform_id_token_claims: bool = False, timeout: float = 30) -> Idp:
    """Start the provider; raise IdpUnavailable when node or the npm package is missing."""
    if not shutil.which("node"):
        raise IdpUnavailable("node not found (Node.js 20+)")
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        raise IdpUnavailable(f"oidc-provider not installed in {HERE} (run .ci/setup.d/oidc.sh)")
    port, rp_port = _free_port(), _free_port()
    idp = Idp(issuer=f"http://127.0.0.1:{port}", client_id="stcloud", client_secret=secrets.token_urlsafe(24),
              public_client_id="stcloud-public", rp_port=rp_port)
    idp.accounts = {
        "erin": {"password": "pw-erin-" + secrets.token_urlsafe(6),
                 "claims": {"preferred_username": "erin", "email": "erin@idp.test", "email_verified": True,
                            "name": "Erin Admin", "groups": ["stcloud-admins", "staff"]}},
        "frank": {"password": "pw-frank-" + secrets.token_urlsafe(6),
                  "claims": {"preferred_username": "frank", "email": "frank@idp.test", "email_verified": True,
                             "name": "Frank Member", "groups": ["stcloud-members"]}},
        "gina": {"password": "pw-gina-" + secrets.token_urlsafe(6),
                 "claims": {"email": "gina@idp.test", "email_verified": True, "name": "Gina Nogroup"}},
    }
    common = {"redirect_uris": [idp.redirect_uri], "grant_types": ["authorization_code"],
              "response_types": ["code"]}
    config = {"port": port, "conformIdTokenClaims": conform_id_token_claims, "accounts": idp.accounts,
              "clients": [{"client_id": idp.client_id, "client_secret": idp.client_secret,
                           "token_endpoint_auth_method": "client_secret_basic", **common},
                          {"client_id": idp.public_client_id, "token_endpoint_auth_method": "none", **common}]}
    cfg_path = workdir / "idp.json"
    cfg_path.write_text(json.dumps(config))
    idp.log_path = workdir / "idp.log"
    log = open(idp.log_path, "wb")
    idp.proc = subprocess.Popen(["node", str(SERVER_JS), str(cfg_path)], cwd=str(HERE),
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if idp.proc.poll() is not None:
            raise IdpUnavailable(f"oidc-provider exited: {idp.log_path.read_text(errors='replace')[-1500:]}")
        try:
            if requests.get(idp.issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                return idp
        except requests.RequestException:
            pass
        time.sleep(0.2)
    idp.stop()
    raise IdpUnavailable(f"oidc-provider not ready within {timeout}s: {idp.log_path.read_text()[-1500:]}")


def sign_in(authorize_url: str, username: str, password: str, redirect_uri: str,
            session: requests.Session | None = None) -> dict:
    """Act as the browser: follow the provider's redirects, fill its login form, and return
    the query arguments of the final redirect to ``redirect_uri`` (not followed)."""
    s = session or requests.Session()
    url, method, data = authorize_url, "GET", None
    for _ in range(20):
        resp = s.request(method, url, data=data, allow_redirects=False, timeout=10)
        if resp.is_redirect:
            url, method, data = urljoin(url, resp.headers["Location"]), "GET", None
            if url.startswith(redirect_uri):
                return dict(parse_qsl(urlsplit(url).query))
            continue
        if resp.status_code in (200, 401) and 'name="username"' in resp.text:
            if data is not None:
                raise AssertionError(f"the provider refused the login: {resp.text[:300]}")
            action = resp.text.split('action="', 1)[1].split('"', 1)[0]
            url, method, data = urljoin(url, action), "POST", {"username": username, "password": password}
            continue
        raise AssertionError(f"unexpected answer {resp.status_code} from {url}: {resp.text[:500]}")
    raise AssertionError("too many redirects")
