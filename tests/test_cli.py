"""The stcloud CLI against a live server; errors are one line and a non-zero exit."""
import json

from click.testing import CliRunner

from stcloud.cli import main
from stcloud.jobs import service
from stcloud.jobs.service import JobUpdate
from tests.jobs.factories import make_job


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_jobs_list_show_logs_cancel(app, live_server):
    jid = make_job(app, "running", name="cli job", provider="worker")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="step 3/10 loss=0.3\n"), source="worker")
    r = run("jobs", "list", "--server", live_server)
    assert r.exit_code == 0 and jid in r.output and "3/10" in r.output and "cli job" in r.output
    r = run("jobs", "list", "--server", live_server, "--json", "--status", "running")
    assert json.loads(r.output)["total"] == 1
    r = run("jobs", "show", "--server", live_server, jid)
    assert r.exit_code == 0 and json.loads(r.output)["job"]["id"] == jid
    r = run("jobs", "logs", "--server", live_server, jid)
    assert r.exit_code == 0 and "step 3/10" in r.output
    r = run("jobs", "cancel", "--server", live_server, jid)
    assert r.exit_code == 0 and "cancelled" in r.output
    r = run("jobs", "logs", "--server", live_server, "--follow", jid)  # terminal: returns at once
    assert r.exit_code == 0


def test_errors_are_one_line(app, live_server):
    r = CliRunner().invoke(main, ["jobs", "show", "--server", live_server, "job_missing"])
    assert r.exit_code == 1 and r.output.strip().startswith("error: 404")
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["jobs", "list", "--server", live_server, "--status", "bogus"])
    assert r.exit_code == 1 and "unknown status" in r.output
    r = CliRunner().invoke(main, ["jobs", "list", "--server", "http://127.0.0.1:1"])
    assert r.exit_code == 1 and "cannot reach stcloud" in r.output


def test_token_is_sent(make_app):
    from werkzeug.serving import make_server
    import threading

    app = make_app(STCLOUD_ADMIN_TOKEN="tok")
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}"
        r = CliRunner().invoke(main, ["jobs", "list", "--server", url])
        assert r.exit_code == 1 and "401" in r.output
        r = CliRunner().invoke(main, ["jobs", "list", "--server", url, "--token", "tok"])
        assert r.exit_code == 0
    finally:
        srv.shutdown()
