"""Accounts test helpers: a signed-in team (admin, member, viewer) with API keys."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from stcloud import db
from stcloud.accounts import service
from stcloud.models import ApiKey, Job, utcnow

PASSWORD = "correct horse battery"


def initial_password(app) -> str:
    return (Path(app.config["STCLOUD_HOME"]) / "initial-admin-password").read_text().strip()


@dataclass
class Member:
    username: str
    role: str
    user_id: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}


def add_user(app, username: str, role: str, password: str = PASSWORD) -> Member:
    with app.app_context():
        user, _ = service.create_user(username, role, password)
        key, token = service.create_key(user["id"], f"{username} key")
    return Member(username, role, user["id"], token, key["id"])


def team(app) -> dict[str, Member]:
    return {"admin": add_user(app, "ada", "admin"), "member": add_user(app, "mia", "member"),
            "member2": add_user(app, "max", "member"), "viewer": add_user(app, "vic", "viewer")}


def expire_key(app, key_id: str) -> None:
    with app.app_context(), db.transaction() as s:
        s.get(ApiKey, key_id).expires_at = utcnow() - timedelta(seconds=1)


def login(client, username: str, password: str = PASSWORD):
    r = client.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r


def set_owner(app, job_id: str, user_id: str | None) -> None:
    with app.app_context(), db.transaction() as s:
        s.get(Job, job_id).owner_id = user_id
