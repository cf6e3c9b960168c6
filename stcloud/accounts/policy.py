"""Which role each route needs. Pure: endpoint names and methods in, a role out.

One table for the whole app instead of decorators scattered through the packages:
- reads (GET/HEAD) need ``viewer`` (every signed-in user), except ``ADMIN_READS``;
- writes need ``admin``, except ``MEMBER_WRITES`` (submit and the member's own jobs — the
  ownership scope turns others' jobs into 404) and ``SELF_WRITES`` (a user's own session,
  password and API keys, allowed to every signed-in user).
A route added later is admin-only for writes until it is listed here: safe by default.
"""
from __future__ import annotations

from stcloud.accounts.scope import ADMIN, MEMBER, VIEWER

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

MEMBER_WRITES = frozenset({
    "submit_api.submit_job",
    "submit_api.data_preview",
    "submit_api.refresh_job",
    "submit_pages.submit_form",
    "submit_pages.submit_preview",
    "submit_pages.refresh_page",
    "costs_api.cost_estimate",
    "jobs_api.cancel_job",
    "jobs_api.delete_job",
    "jobs_pages.cancel_page",
    "jobs_pages.delete_page",
    "rerun_api.api_rerun",
    "rerun_pages.rerun_page",
    "config_api.validate_config",  # checks a config against the field schema; writes nothing
    "checkpoints_api.resume_job",
    "checkpoints_api.continue_job",
    "checkpoints_pages.resume_submit",
    "pipelines_api.submit_pipeline",
    "pipelines_api.cancel_pipeline",
    "pipelines_pages.cancel_page",
})

SELF_WRITES = frozenset({
    "web.logout",
    "accounts_api.logout",
    "accounts_api.change_password",
    "accounts_api.create_token",
    "accounts_api.revoke_token",
    "accounts_pages.change_password_page",
    "accounts_pages.create_token_page",
    "accounts_pages.revoke_token_page",
    "notify_prefs_api.put_mine",  # a user's own notification preferences
    "notify_prefs_pages.save_page",
})

# The API document (``api_docs.openapi_json``, ``api_docs.api_docs``) is public: its blueprint
# is marked with ``auth.public`` and holds no data (docs/api.md).

ADMIN_READS = frozenset({
    "accounts_api.list_users",
    "accounts_api.get_user",
    "accounts_api.audit_log",
    "accounts_pages.users_page",
    "accounts_pages.audit_page",
    # notification settings and the delivery log name every user's jobs and errors
    "notify_api.get_notifications",
    "notify_api.delivery_log",
    "notify_pages.notifications_section",
})


def required_role(endpoint: str | None, method: str) -> str:
    if method in SAFE_METHODS:
        return ADMIN if endpoint in ADMIN_READS else VIEWER
    if endpoint in SELF_WRITES:
        return VIEWER
    if endpoint in MEMBER_WRITES:
        return MEMBER
    return ADMIN
