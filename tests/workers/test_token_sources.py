"""Where ``stcloud worker`` takes its token from: STCLOUD_WORKER_TOKEN, --token-file (0600),
--token (still works, warns: argv is visible in ps)."""
from __future__ import annotations

import os

import click
import pytest
from click.testing import CliRunner

from stcloud.workers import agent
from stcloud.workers.agent import worker_command, worker_token
from tests.conftest import csrf_of


def test_env_variable(monkeypatch):
    monkeypatch.setenv("STCLOUD_WORKER_TOKEN", "stw_from_env")
    assert worker_token(None, None) == "stw_from_env"


def test_token_file_must_be_private(tmp_path, monkeypatch):
    monkeypatch.delenv("STCLOUD_WORKER_TOKEN", raising=False)
    f = tmp_path / "token"
    f.write_text("stw_from_file\n")
    os.chmod(f, 0o600)
    assert worker_token(None, str(f)) == "stw_from_file"
    for mode in (0o640, 0o604, 0o644):
        os.chmod(f, mode)
        with pytest.raises(click.UsageError, match="readable by others"):
            worker_token(None, str(f))
    os.chmod(f, 0o600)
    f.write_text("  \n")
    with pytest.raises(click.UsageError, match="is empty"):
        worker_token(None, str(f))
    with pytest.raises(click.UsageError, match="cannot read"):
        worker_token(None, str(tmp_path / "missing"))


def test_token_flag_warns_on_stderr(monkeypatch):
    monkeypatch.delenv("STCLOUD_WORKER_TOKEN", raising=False)
    seen = {}

    class Stop(Exception):
        pass

    def fake_agent(server, token, **kw):
        seen["token"] = token
        raise Stop()

    monkeypatch.setattr(agent, "Agent", fake_agent)
    r = CliRunner().invoke(worker_command, ["--server", "http://127.0.0.1:9", "--token", "stw_argv"])
    assert isinstance(r.exception, Stop) and seen["token"] == "stw_argv"
    assert "warning: --token puts the worker token on the command line" in r.stderr


def test_file_and_env_do_not_warn_and_missing_token_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("STCLOUD_WORKER_TOKEN", raising=False)
    r = CliRunner().invoke(worker_command, ["--server", "http://127.0.0.1:9"])
    assert r.exit_code == 2 and "STCLOUD_WORKER_TOKEN or --token-file" in r.stderr
    f = tmp_path / "token"
    f.write_text("stw_x")
    os.chmod(f, 0o644)
    r = CliRunner().invoke(worker_command, ["--server", "http://127.0.0.1:9", "--token-file", str(f)])
    assert r.exit_code == 2 and "chmod 600" in r.stderr and "warning" not in r.stderr


def test_workers_page_command_keeps_the_token_out_of_argv(client):
    r = client.post("/api/cloud/workers", json={"name": "gpu-box", "labels": {"gpu": "a100"}})
    assert r.status_code == 201
    body = r.get_json()
    command = body["command"]
    assert command.startswith(f"STCLOUD_WORKER_TOKEN={body['token']} stcloud worker --server ")
    assert "--token" not in command
    r = client.post("/workers", data={"name": "page-box", "labels": "", "csrf_token": csrf_of(client)})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "STCLOUD_WORKER_TOKEN=stw_" in page and "--token " not in page
