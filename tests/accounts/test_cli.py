"""API keys through the CLI: `stcloud login` stores a key (0600) that later commands use;
`--token` and STCLOUD_ADMIN_TOKEN keep working; expired and revoked keys fail in one line."""
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from stcloud.cli import main
from tests.accounts.helpers import PASSWORD, add_user, expire_key, set_owner
from tests.conftest import ROOT, free_port, serve_in_thread
from tests.jobs.factories import make_job


@pytest.fixture
def served(make_app, tmp_path, monkeypatch):
    app = make_app(STCLOUD_AUTH="on", STCLOUD_ADMIN_TOKEN="boot-token")
    cfg = tmp_path / "user-config" / "config.json"
    monkeypatch.setenv("STCLOUD_CONFIG", str(cfg))
    for var in ("STCLOUD_SERVER", "STCLOUD_TOKEN", "STCLOUD_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with serve_in_thread(app) as url:
        yield app, url, cfg


def cli(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_login_stores_a_key_that_later_commands_use(served):
    app, url, cfg = served
    mia = add_user(app, "mia", "member")
    other = add_user(app, "max", "member")
    mine, theirs = make_job(app, "running", name="mine"), make_job(app, "running", name="theirs")
    set_owner(app, mine, mia.user_id)
    set_owner(app, theirs, other.user_id)

    r = cli("login", "--server", url, "--username", "mia", "--password-stdin", input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    assert f"Signed in to {url} as mia (member)" in r.output
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    stored = json.loads(cfg.read_text())
    assert stored["default_server"] == url and stored["servers"][url]["token"].startswith("stc_")

    listed = cli("jobs", "list", "--json")  # no --server, no --token: what login stored
    assert listed.exit_code == 0, listed.output
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [mine]
    shown = cli("jobs", "show", theirs)
    assert shown.exit_code == 1 and "404" in shown.stderr
    assert cli("jobs", "cancel", theirs).exit_code == 1
    assert cli("jobs", "cancel", mine).exit_code == 0

    # the key is listed with a last-used time
    keys = requests.get(f"{url}/api/cloud/tokens", timeout=5,
                        headers={"Authorization": f"Bearer {stored['servers'][url]['token']}"}).json()["tokens"]
    assert any(k["id"] == stored["servers"][url]["key_id"] and k["last_used_at"] for k in keys)

    out = cli("logout")
    assert out.exit_code == 0 and "Signed out" in out.output
    assert url not in json.loads(cfg.read_text())["servers"]
    r = requests.get(f"{url}/api/cloud/jobs", timeout=5,
                     headers={"Authorization": f"Bearer {stored['servers'][url]['token']}"})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    after = cli("jobs", "list", "--server", url)
    assert after.exit_code == 1 and after.stderr.strip().startswith("error: 401")


def test_login_refused_in_one_line(served):
    _, url, cfg = served
    add_user(served[0], "mia", "member")
    r = cli("login", "--server", url, "-u", "mia", "--password", "wrong")
    assert r.exit_code == 1 and r.stderr.strip() == "error: sign-in refused: 401 invalid username or password"
    assert not cfg.exists()
    r = cli("login", "--server", "http://127.0.0.1:9", "-u", "mia", "--password", "x")
    assert r.exit_code == 1 and "cannot reach stcloud" in r.stderr


def test_token_option_and_admin_token_still_work(served, monkeypatch):
    app, url, _ = served
    mia = add_user(app, "mia", "member")
    assert cli("jobs", "list", "--server", url, "--token", mia.key).exit_code == 0
    assert cli("jobs", "list", "--server", url, "--token", "boot-token").exit_code == 0
    monkeypatch.setenv("STCLOUD_ADMIN_TOKEN", "boot-token")
    assert cli("jobs", "list", "--server", url).exit_code == 0
    monkeypatch.delenv("STCLOUD_ADMIN_TOKEN")
    expire_key(app, mia.key_id)
    r = cli("jobs", "list", "--server", url, "--token", mia.key)
    assert r.exit_code == 1 and r.stderr.strip() == "error: 401 this API key has expired; create a new one"
    r = cli("jobs", "list", "--server", url)
    assert r.exit_code == 1 and "sign in first" in r.stderr


def test_api_keys_api(served):
    app, url, _ = served
    mia = add_user(app, "mia", "member")
    h = mia.headers
    r = requests.post(f"{url}/api/cloud/tokens", json={"name": "ci", "expires_in_days": 30}, headers=h, timeout=5)
    assert r.status_code == 201 and r.json()["token"].startswith("stc_") and r.json()["id"].startswith("key_")
    created = r.json()
    listed = requests.get(f"{url}/api/cloud/tokens", headers=h, timeout=5).json()["tokens"]
    assert {k["name"] for k in listed} == {"mia key", "ci"}
    assert all("token" not in k for k in listed)  # shown once, stored hashed
    for bad in ({"name": ""}, {"name": "x", "expires_in_days": 0}, {"name": "x", "expires_in_days": "7"}):
        r = requests.post(f"{url}/api/cloud/tokens", json=bad, headers=h, timeout=5)
        assert r.status_code == 422, bad
    other = add_user(app, "max", "member")
    assert requests.delete(f"{url}/api/cloud/tokens/{created['id']}", headers=other.headers,
                           timeout=5).status_code == 404
    assert requests.delete(f"{url}/api/cloud/tokens/{created['id']}", headers=h, timeout=5).status_code == 204
    r = requests.get(f"{url}/api/cloud/me", headers={"Authorization": f"Bearer {created['token']}"}, timeout=5)
    assert r.status_code == 401


def _serve(home: Path, host: str, env_extra: dict, args=()) -> subprocess.Popen:
    env = {**os.environ, "STCLOUD_HOME": str(home), "PYTHONUNBUFFERED": "1", **env_extra}
    return subprocess.Popen([sys.executable, "-m", "stcloud.cli", "serve", "--host", host, "--port",
                             str(free_port()), "--no-scheduler", *args],
                            env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_auth_off_refused_on_a_non_loopback_bind(tmp_path):
    proc = _serve(tmp_path, "0.0.0.0", {"STCLOUD_AUTH": "off"})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out.strip().splitlines()[-1] == ("error: STCLOUD_AUTH=off is refused on a non-loopback address "
                                            "(--host 0.0.0.0); bind to 127.0.0.1 or turn authentication on")


def test_serve_first_start_prints_password_and_login_link(serve_process, tmp_path):
    srv = serve_process(env={"STCLOUD_AUTH": "on"}, args=("--login-link", "--no-scheduler"))
    password = (srv.home / "initial-admin-password").read_text().strip()
    deadline = time.time() + 10
    log = ""
    while time.time() < deadline and "/login/link/" not in log:
        log = srv.log_path.read_text()
        time.sleep(0.1)
    assert f"password: {password}" in log
    link = next(line for line in log.splitlines() if "/login/link/" in line).split()[2]
    assert link.startswith(srv.url + "/login/link/")
    assert requests.get(srv.url + "/api/cloud/jobs", timeout=5).status_code == 401
    s = requests.Session()
    r = s.get(link, timeout=5)
    assert r.status_code == 200 and r.url.endswith("/account?welcome=1")
    assert s.get(srv.url + "/api/cloud/me", timeout=5).json()["user"]["username"] == "admin"
    assert requests.get(link, timeout=5, allow_redirects=False).status_code == 401  # single use
