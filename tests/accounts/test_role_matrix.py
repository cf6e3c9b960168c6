"""Every registered route × every kind of caller -> the expected status class.

Callers: admin, member, viewer (API keys), anonymous, an expired key, a revoked key.
Expected: ``ok`` (anything but 401/403 — placeholder ids answer 404, empty bodies 400/422),
``forbidden`` (403), ``unauthenticated`` (401; a page GET redirects to /login). No caller ever
gets a 500. Machine routes (webhooks, S3, worker API) authenticate by their own means and are
left out by their blueprint marker; public routes (sign-in, health) are checked separately.
"""
import shutil

import pytest

from stcloud import create_app
from stcloud.accounts import guard, policy, service
from stcloud.web import auth
from tests.accounts.helpers import add_user, expire_key

PLACEHOLDERS = {"job_id": "job_missing", "username": "nobody", "key_id": "key_missing",
                "worker_id": "wrk_missing", "access_key_id": "STCMISSING", "provider": "replicate",
                "name": "missing-config", "commit": "0" * 40, "token": "not-a-link",
                "filename": "app.css", "bucket": "missing-bucket",
                "rest": "outputs/job_missing/weights.safetensors", "step": "10",
                "pipeline_id": "pip_missing"}
CALLERS = ("admin", "member", "viewer", "anonymous", "expired", "revoked")


def _url(rule) -> str:
    values = {}
    for arg in rule.arguments:
        if arg not in PLACEHOLDERS:
            pytest.fail(f"add a placeholder for <{arg}> in {rule.rule}")
        values[arg] = PLACEHOLDERS[arg]
    url = rule.rule
    for arg, value in values.items():
        url = url.replace(f"<{arg}>", value)
        for conv in ("string", "path", "int", "s3any"):
            url = url.replace(f"<{conv}:{arg}>", value)
    return url


def _expected(caller: str, endpoint: str, method: str) -> str:
    if caller in ("anonymous", "expired", "revoked"):
        return "unauthenticated"
    needed = policy.required_role(endpoint, method)
    rank = {"viewer": 0, "member": 1, "admin": 2}
    return "ok" if rank[caller] >= rank[needed] else "forbidden"


def _classify(resp, path: str, method: str) -> str:
    if resp.status_code == 401:
        return "unauthenticated"
    if resp.status_code == 302 and "/login" in resp.headers.get("Location", "") and method == "GET" \
            and not path.startswith("/api/"):
        return "unauthenticated"
    if resp.status_code == 403:
        return "forbidden"
    return "ok"


@pytest.fixture(scope="module")
def matrix_app(tmp_path_factory, migrated_db_template):
    home = tmp_path_factory.mktemp("matrix-home")
    shutil.copy(migrated_db_template, home / "stcloud.db")
    app = create_app({"TESTING": True, "STCLOUD_HOME": str(home), "STCLOUD_AUTH": "on",
                      "STCLOUD_DATABASE_URL": f"sqlite:///{home / 'stcloud.db'}",
                      "STCLOUD_LOGIN_RATE_LIMIT": "10000 per minute"})
    callers = {role: add_user(app, f"m-{role}", role) for role in ("admin", "member", "viewer")}
    expired = add_user(app, "m-expired", "admin")
    expire_key(app, expired.key_id)
    revoked = add_user(app, "m-revoked", "admin")
    with app.app_context():
        service.revoke_key(revoked.user_id, revoked.key_id)
    headers = {role: m.headers for role, m in callers.items()}
    headers.update(expired=expired.headers, revoked=revoked.headers, anonymous={})
    yield app, headers
    app.extensions["stcloud.db"].dispose()


def _routes(app):
    out = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.endpoint == "static" or auth.is_machine_endpoint(rule.endpoint):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule, method))
    return out


def test_matrix_covers_every_non_machine_route(matrix_app):
    app, _ = matrix_app
    endpoints = {r.endpoint for r, _ in _routes(app)}
    machine = {r.endpoint for r in app.url_map.iter_rules() if auth.is_machine_endpoint(r.endpoint)}
    assert {"webhooks.replicate_webhook", "workers_api.claim", "s3.path"} <= machine
    assert {"jobs_api.list_jobs", "accounts_api.list_users", "accounts_api.audit_log",
            "submit_api.submit_job"} <= endpoints
    assert len(endpoints) > 60


@pytest.mark.parametrize("caller", CALLERS)
def test_role_matrix(matrix_app, caller):
    app, headers = matrix_app
    client = app.test_client()
    wrong = []
    for rule, method in _routes(app):
        path = _url(rule)
        kwargs = {"headers": headers[caller]}
        if method != "GET":
            kwargs["json"] = {}
        resp = client.open(path, method=method, **kwargs)
        assert resp.status_code != 500, f"{caller} {method} {path} -> 500"
        if auth.is_public_endpoint(rule.endpoint):
            continue  # sign-in and health routes: their own tests
        got = _classify(resp, path, method)
        want = _expected(caller, rule.endpoint, method)
        if got != want:
            wrong.append(f"{caller} {method} {path} ({rule.endpoint}): want {want}, got {resp.status_code}")
    assert not wrong, "\n".join(wrong)


def test_sessions_follow_the_same_policy(matrix_app):
    """The browser path (session cookie + CSRF) gets the same answers as API keys."""
    app, _ = matrix_app
    c = app.test_client()
    r = c.post("/api/auth/login", json={"username": "m-viewer", "password": "correct horse battery"})
    assert r.status_code == 200
    assert c.get("/api/cloud/jobs").status_code == 200
    assert c.post("/api/cloud/jobs/submit", json={}).status_code == 403
    assert c.get("/users").status_code == 403
    c2 = app.test_client()
    c2.post("/api/auth/login", json={"username": "m-member", "password": "correct horse battery"})
    assert c2.post("/api/cloud/jobs/submit", json={}).status_code not in (401, 403)
    assert c2.put("/api/cloud/settings/consent", json={"mode": "ask"}).status_code == 403


def test_policy_and_audit_tables_name_real_endpoints(app):
    """The role and audit tables are keyed by endpoint names: a renamed route must not silently
    fall back to admin-only or to an unnamed audit action."""
    from stcloud.accounts import policy

    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    named = (set(policy.MEMBER_WRITES) | set(policy.SELF_WRITES) | set(policy.ADMIN_READS)
             | set(guard.ACTIONS) | set(guard.NOT_AUDITED))
    assert named - endpoints == set()
