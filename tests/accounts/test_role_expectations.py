"""The important routes × every kind of caller, against a table written by hand from the issue's
role definitions — not derived from ``stcloud.accounts.policy`` — so a wrong entry in the policy
table (a member allowed to approve, a viewer allowed to mint keys, users CRUD open to members)
fails here. ``test_role_matrix.py`` checks that every route follows the policy table; this file
checks that the table says the right thing.

Roles (issue 14): admin — everything; member — submit, see/cancel/re-run/delete their own
jobs, read shared settings; viewer — read only. Everyone signed in manages their own password
and API keys. Anonymous callers and expired or revoked keys get 401 (a page GET: the sign-in page).
"""
import shutil

import pytest

from stcloud import create_app
from stcloud.accounts import policy, service
from tests.accounts.helpers import add_user, expire_key

OK, FORBIDDEN, UNAUTH = "ok", "forbidden", "unauthenticated"
J = "job_missing"
#              method  path                                            endpoint                          admin member viewer
EXPECTED = [
    # jobs
    ("GET", "/api/cloud/jobs", "jobs_api.list_jobs", OK, OK, OK),
    ("POST", "/api/cloud/jobs/submit", "submit_api.submit_job", OK, OK, FORBIDDEN),
    ("POST", f"/api/cloud/jobs/{J}/cancel", "jobs_api.cancel_job", OK, OK, FORBIDDEN),
    ("POST", f"/jobs/{J}/cancel", "jobs_pages.cancel_page", OK, OK, FORBIDDEN),
    ("DELETE", f"/api/cloud/jobs/{J}", "jobs_api.delete_job", OK, OK, FORBIDDEN),
    ("POST", f"/api/cloud/jobs/{J}/rerun", "rerun_api.api_rerun", OK, OK, FORBIDDEN),
    # approvals: admins only
    ("POST", f"/api/cloud/jobs/{J}/approve", "approval_api.approve_job", OK, FORBIDDEN, FORBIDDEN),
    ("POST", f"/api/cloud/jobs/{J}/reject", "approval_api.reject_job", OK, FORBIDDEN, FORBIDDEN),
    ("POST", f"/jobs/{J}/approve", "approval_pages.approve_page", OK, FORBIDDEN, FORBIDDEN),
    ("POST", f"/jobs/{J}/reject", "approval_pages.reject_page", OK, FORBIDDEN, FORBIDDEN),
    ("PUT", "/api/cloud/settings/approval", "approval_api.put_settings", OK, FORBIDDEN, FORBIDDEN),
    # providers: everyone reads, admins change settings and tokens
    ("GET", "/api/cloud/providers", "providers_api.list_providers", OK, OK, OK),
    ("PUT", "/api/cloud/providers/replicate", "providers_api.put_provider", OK, FORBIDDEN, FORBIDDEN),
    ("PUT", "/api/cloud/providers/replicate/token", "providers_api.put_token", OK, FORBIDDEN, FORBIDDEN),
    ("DELETE", "/api/cloud/providers/replicate/token", "providers_api.del_token", OK, FORBIDDEN, FORBIDDEN),
    # users (and their per-user limits, set by PATCH): admins only, reads included
    ("GET", "/api/cloud/users", "accounts_api.list_users", OK, FORBIDDEN, FORBIDDEN),
    ("POST", "/api/cloud/users", "accounts_api.create_user", OK, FORBIDDEN, FORBIDDEN),
    ("GET", "/api/cloud/users/nobody", "accounts_api.get_user", OK, FORBIDDEN, FORBIDDEN),
    ("PATCH", "/api/cloud/users/nobody", "accounts_api.update_user", OK, FORBIDDEN, FORBIDDEN),
    ("DELETE", "/api/cloud/users/nobody", "accounts_api.delete_user", OK, FORBIDDEN, FORBIDDEN),
    ("GET", "/users", "accounts_pages.users_page", OK, FORBIDDEN, FORBIDDEN),
    ("POST", "/users", "accounts_pages.invite_page", OK, FORBIDDEN, FORBIDDEN),
    ("POST", "/users/nobody", "accounts_pages.update_user_page", OK, FORBIDDEN, FORBIDDEN),
    # one's own account and API keys: every signed-in user
    ("GET", "/api/cloud/me", "accounts_api.me", OK, OK, OK),
    ("POST", "/api/cloud/me/password", "accounts_api.change_password", OK, OK, OK),
    ("GET", "/api/cloud/tokens", "accounts_api.list_tokens", OK, OK, OK),
    ("POST", "/api/cloud/tokens", "accounts_api.create_token", OK, OK, OK),
    ("DELETE", "/api/cloud/tokens/key_missing", "accounts_api.revoke_token", OK, OK, OK),
    # the audit log: admins only
    ("GET", "/api/cloud/audit", "accounts_api.audit_log", OK, FORBIDDEN, FORBIDDEN),
    ("GET", "/audit", "accounts_pages.audit_page", OK, FORBIDDEN, FORBIDDEN),
    # limits, rates, spend
    ("GET", "/api/cloud/cost-limits", "costs_api.list_limits", OK, OK, OK),
    ("PUT", "/api/cloud/cost-limits/all", "costs_api.put_limit", OK, FORBIDDEN, FORBIDDEN),
    ("POST", "/spend/limits/all", "costs_pages.save_limit_form", OK, FORBIDDEN, FORBIDDEN),
    ("PUT", "/api/cloud/rates", "costs_api.put_rates", OK, FORBIDDEN, FORBIDDEN),
    ("GET", "/api/cloud/costs/summary", "costs_api.costs_summary", OK, OK, OK),
    ("GET", "/spend", "costs_pages.spend_page", OK, OK, OK),
    ("POST", "/api/cloud/cost-estimate", "costs_api.cost_estimate", OK, OK, FORBIDDEN),
    # consent
    ("GET", "/api/cloud/settings/consent", "settings_api.get_consent", OK, OK, OK),
    ("PUT", "/api/cloud/settings/consent", "settings_api.put_consent", OK, FORBIDDEN, FORBIDDEN),
    # S3 credentials: everyone sees the list (no secrets), admins mint and revoke
    ("GET", "/api/cloud/storage/credentials", "storage_api.list_keys", OK, OK, OK),
    ("POST", "/api/cloud/storage/credentials", "storage_api.mint_key", OK, FORBIDDEN, FORBIDDEN),
    ("DELETE", "/api/cloud/storage/credentials/STCMISSING", "storage_api.revoke_key", OK, FORBIDDEN, FORBIDDEN),
    # workers: everyone sees them, admins manage them
    ("GET", "/api/cloud/workers", "workers_admin_api.list_", OK, OK, OK),
    ("POST", "/api/cloud/workers", "workers_admin_api.create", OK, FORBIDDEN, FORBIDDEN),
    ("POST", "/api/cloud/workers/wrk_missing/rotate-token", "workers_admin_api.rotate", OK, FORBIDDEN, FORBIDDEN),
    ("POST", "/api/cloud/workers/wrk_missing/drain", "workers_admin_api.drain", OK, FORBIDDEN, FORBIDDEN),
    ("POST", "/api/cloud/workers/wrk_missing/resume", "workers_admin_api.resume", OK, FORBIDDEN, FORBIDDEN),
    ("DELETE", "/api/cloud/workers/wrk_missing", "workers_admin_api.delete", OK, FORBIDDEN, FORBIDDEN),
    ("PUT", "/api/cloud/workers/settings", "workers_admin_api.put_settings", OK, FORBIDDEN, FORBIDDEN),
]
ROLES = ("admin", "member", "viewer")
NO_CREDENTIAL = ("anonymous", "expired", "revoked")


@pytest.fixture(scope="module")
def team_app(tmp_path_factory, migrated_db_template):
    home = tmp_path_factory.mktemp("expectations-home")
    shutil.copy(migrated_db_template, home / "stcloud.db")
    app = create_app({"TESTING": True, "STCLOUD_HOME": str(home), "STCLOUD_AUTH": "on",
                      "STCLOUD_DATABASE_URL": f"sqlite:///{home / 'stcloud.db'}",
                      "STCLOUD_LOGIN_RATE_LIMIT": "10000 per minute"})
    headers = {role: add_user(app, f"e-{role}", role).headers for role in ROLES}
    expired = add_user(app, "e-expired", "admin")
    expire_key(app, expired.key_id)
    revoked = add_user(app, "e-revoked", "admin")
    with app.app_context():
        service.revoke_key(revoked.user_id, revoked.key_id)
    headers.update(anonymous={}, expired=expired.headers, revoked=revoked.headers)
    yield app, headers
    app.extensions["stcloud.db"].dispose()


def _classify(resp, method: str, path: str) -> str:
    if resp.status_code == 401:
        return UNAUTH
    if resp.status_code == 302 and method == "GET" and not path.startswith("/api/") \
            and "/login" in resp.headers.get("Location", ""):
        return UNAUTH
    return FORBIDDEN if resp.status_code == 403 else OK


def _mismatches(app, headers, callers) -> list[str]:
    client = app.test_client()
    wrong = []
    for method, path, _endpoint, *wanted in EXPECTED:
        want = dict(zip(ROLES, wanted, strict=True))
        for caller in callers:
            kwargs = {"headers": headers[caller]}
            if method != "GET":
                kwargs["json"] = {}
            resp = client.open(path, method=method, **kwargs)
            assert resp.status_code != 500, f"{caller} {method} {path} -> 500"
            got = _classify(resp, method, path)
            expected = want.get(caller, UNAUTH)
            if got != expected:
                wrong.append(f"{caller} {method} {path}: want {expected}, got {resp.status_code}")
    return wrong


def test_the_table_names_real_routes(team_app):
    """Each row's path reaches the endpoint it names (a renamed or moved route fails here)."""
    app, _ = team_app
    adapter = app.url_map.bind("localhost")
    for method, path, endpoint, *_ in EXPECTED:
        assert adapter.match(path, method=method)[0] == endpoint, (method, path)


@pytest.mark.parametrize("caller", ROLES + NO_CREDENTIAL)
def test_each_caller_gets_what_the_roles_allow(team_app, caller):
    app, headers = team_app
    wrong = _mismatches(app, headers, [caller])
    assert not wrong, "\n".join(wrong)


MISTAKES = {
    "members approve": ("MEMBER_WRITES", lambda s: s | {"approval_api.approve_job"}),
    "members mint S3 keys": ("MEMBER_WRITES", lambda s: s | {"storage_api.mint_key"}),
    "members cannot submit": ("MEMBER_WRITES", lambda s: s - {"submit_api.submit_job"}),
    "anyone edits users": ("SELF_WRITES", lambda s: s | {"accounts_api.update_user"}),
    "the job list is admin-only": ("ADMIN_READS", lambda s: s | {"jobs_api.list_jobs"}),
    "everyone reads the audit log": ("ADMIN_READS", lambda s: s - {"accounts_api.audit_log"}),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_wrong_policy_entry_is_caught(team_app, monkeypatch, mistake):
    app, headers = team_app
    table, change = MISTAKES[mistake]
    monkeypatch.setattr(policy, table, frozenset(change(getattr(policy, table))))
    assert _mismatches(app, headers, ROLES)
