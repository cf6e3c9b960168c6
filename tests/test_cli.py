"""The stcloud CLI against a live server (seeded jobs): human output, ``--json``, exit codes;
errors are one line and a non-zero exit. The flows with a real trainer are in
tests/test_cli_flow.py."""
import json
import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from stcloud import db
from stcloud.cli import main
from stcloud.jobs import service
from stcloud.jobs.service import JobUpdate
from stcloud.models import Job, utcnow
from tests.conftest import serve_in_thread
from tests.jobs.factories import make_job


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def one_error_line(r, code=1):
    assert r.exit_code == code, r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def set_times(app, job_id, *, ran: float, cost: float | None = None):
    """Backdate the job's start so it ran ``ran`` seconds (and record its actual cost)."""
    with app.app_context(), db.transaction() as s:
        job = s.get(Job, job_id)
        end = job.completed_at or utcnow()
        job.started_at = end - timedelta(seconds=ran)
        if cost is not None:
            job.cost_usd = cost


def test_list_human_and_json(app, live_server):
    r = run("jobs", "list", "--server", live_server)
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == "no jobs yet\n"
    running = make_job(app, "running", name="cli job", provider="worker", estimated_cost_usd=1.5)
    with app.app_context():
        service.apply_update(running, JobUpdate(logs_append="step 3/10 loss=0.3\n"), source="worker")
    failed = make_job(app, "failed", name="broken", provider="local", error="trainer exited with code 2\nboom")
    r = run("jobs", "list", "--server", live_server)
    assert r.exit_code == 0, r.output
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PROVIDER", "PROGRESS", "LOSS", "TIME", "COST", "NAME"]
    assert len(rows) == 2 and rows[0].startswith(failed) and rows[1].startswith(running)
    assert re.search(r"running\s+worker\s+30% 3/10\s+0\.3000\s+\d+s\s+~\$1\.50\s+cli job$", rows[1])
    assert rows[0].endswith("broken  (trainer exited with code 2)")
    assert r.stderr == ""  # every job is shown: no footer
    r = run("jobs", "list", "--server", live_server, "--limit", "1")
    assert len(r.stdout.splitlines()) == 2 and r.stderr == "showing 1 of 2 jobs (--limit for more)\n"
    r = run("jobs", "list", "--server", live_server, "--json", "--status", "running")
    data = json.loads(r.stdout)
    assert data["total"] == 1 and data["jobs"][0]["id"] == running
    r = run("jobs", "list", "--server", live_server, "--status", "cancelled")
    assert r.exit_code == 0 and r.stderr == "no jobs match these filters\n"


def test_show_human_and_json(app, live_server):
    jid = make_job(app, "running", name="show me", provider="worker", estimated_cost_usd=0.5, max_cost_usd=2.0,
                   outputs=[{"name": "sample.png", "url": "https://example.invalid/sample.png", "size": 2048,
                             "destination": "replicate"},
                            {"name": "w.safetensors", "download_url": "/api/cloud/storage/outputs/x/w.safetensors",
                             "destination": "builtin"}])
    text = "".join(f"step {i}/40 loss={1 / i:.4f}\n" for i in range(1, 31))
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append=text), source="worker")
    set_times(app, jid, ran=60)
    r = run("jobs", "show", "--server", live_server, jid)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.startswith(f"{jid}  show me\n")
    assert re.search(r"status\s+running  \(worker\)", out)
    assert re.search(r"progress\s+\[#{22}-{8}\] 75%  step 30/40  loss 0\.0333  0\.[45]\d steps/s, ETA 2\ds", out)
    assert re.search(r"cost\s+no actual cost yet · estimate \$0\.50 · cap \$2\.00", out)
    assert re.search(r"started\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", out) and re.search(r"running\s+for 1m 0\ds", out)
    assert re.search(r"sample\.png\s+2\.0 KiB  https://example\.invalid/sample\.png", out)
    assert re.search(rf"w\.safetensors\s+-  {live_server}/api/cloud/storage/outputs/x/w\.safetensors\n", out)
    tail = out.split("last 10 log lines")[1].splitlines()[1:]
    assert [ln.strip() for ln in tail] == [f"step {i}/40 loss={1 / i:.4f}" for i in range(21, 31)]
    r = run("jobs", "show", "--server", live_server, "--lines", "0", jid)
    assert "log lines" not in r.stdout
    r = run("jobs", "show", "--server", live_server, "--json", jid)
    data = json.loads(r.stdout)
    assert data["job"]["id"] == jid and data["job"]["progress"]["step"] == 30
    assert [e["to"] for e in data["events"]] == ["queued", "running"]

    failed = make_job(app, "failed", name="f", provider="local", error="trainer exited with code 2\nerror: bad lr")
    r = run("jobs", "show", "--server", live_server, failed)
    assert re.search(r"reason\s+trainer exited with code 2 — error: bad lr", r.stdout)
    assert "\nerror:\n  trainer exited with code 2\n  error: bad lr\n" in r.stdout
    assert "outputs: none\n" in r.stdout


def test_logs_and_follow_with_final_line_and_exit_code(app, live_server):
    done = make_job(app, "completed", name="done", provider="local")
    with app.app_context():
        service.apply_update(done, JobUpdate(logs_append="step 10/10 loss=0.1\nno newline at the end"),
                             source="worker")
    set_times(app, done, ran=72, cost=0.42)
    r = run("jobs", "logs", "--server", live_server, done)
    assert r.exit_code == 0 and r.stdout == "step 10/10 loss=0.1\nno newline at the end\n" and r.stderr == ""
    r = run("jobs", "logs", "--server", live_server, "-f", done)  # ended: returns at once
    assert r.exit_code == 0 and r.stdout == "step 10/10 loss=0.1\nno newline at the end\n"
    assert r.stderr == "completed in 1m 12s, $0.42\n"  # no terminal: no bar, the same final line

    cancelled = make_job(app, "running", name="c", provider="worker")
    with app.app_context():
        service.cancel(cancelled, reason="spend limit reached")
    r = run("jobs", "logs", "--server", live_server, "--follow", cancelled)
    assert r.exit_code == 1 and re.fullmatch(r"cancelled: spend limit reached \(after \d+s, cost unknown\)\n", r.stderr)

    failed = make_job(app, "failed", name="f", provider="local", error="worker lost; gave up after 3 attempt(s)")
    r = run("jobs", "logs", "--server", live_server, "-f", failed)
    assert r.exit_code == 1 and r.stderr.startswith("failed: worker lost; gave up after 3 attempt(s) (after ")


def test_wait_exit_codes_and_json(app, live_server):
    done = make_job(app, "completed", name="d", provider="local")
    set_times(app, done, ran=5, cost=0.0)
    r = run("jobs", "wait", "--server", live_server, done)
    assert r.exit_code == 0 and r.stdout == "completed in 5s, $0.00\n"
    r = run("jobs", "wait", "--server", live_server, "--json", done)
    assert r.exit_code == 0 and json.loads(r.stdout)["job"]["status"] == "completed"
    failed = make_job(app, "failed", name="f", provider="local", error="trainer exited with code 2")
    r = run("jobs", "wait", "--server", live_server, failed)
    assert r.exit_code == 1 and r.stdout.startswith("failed: trainer exited with code 2 (after ")
    queued = make_job(app, "queued", name="q", provider="worker")  # no worker: it stays queued
    r = run("jobs", "wait", "--server", live_server, "--timeout", "0.3", "--interval", "0.1", queued)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr == f"timeout: job {queued} is still queued after 0s\n"
    r = run("jobs", "wait", "--server", live_server, "--timeout", "0", "--json", queued)
    assert r.exit_code == 2 and json.loads(r.stdout)["timed_out"] is True


def test_cancel_and_cancel_of_a_finished_job(app, live_server):
    jid = make_job(app, "running", name="c", provider="worker")
    r = run("jobs", "cancel", "--server", live_server, jid)
    assert r.exit_code == 0 and r.stdout == f"cancelled {jid}\n"
    line = one_error_line(run("jobs", "cancel", "--server", live_server, jid))
    assert line == f"error: job {jid} already finished (cancelled); nothing to cancel"
    other = make_job(app, "queued", name="c2", provider="worker")
    r = run("jobs", "cancel", "--server", live_server, "--json", other)
    assert r.exit_code == 0 and json.loads(r.stdout)["job"]["status"] == "cancelled"
    done = make_job(app, "completed", name="d", provider="local")
    assert "already finished (completed)" in one_error_line(run("jobs", "cancel", "--server", live_server, "--json", done))


def test_download_without_outputs_is_a_clear_error(app, live_server, tmp_path):
    running = make_job(app, "running", name="r", provider="worker")
    line = one_error_line(run("jobs", "download", "--server", live_server, "-o", str(tmp_path / "d"), running))
    assert line == f"error: job {running} has no outputs to download (running; outputs arrive when it completes)"
    line = one_error_line(run("jobs", "download", "--server", live_server, "--checkpoint", "5", running))
    assert line == f"error: job {running} has no checkpoint at step 5 (it stored none)"
    evil = make_job(app, "completed", name="e", provider="local",
                    outputs=[{"name": "../escape.txt", "download_url": "/api/cloud/storage/outputs/x/escape.txt"}])
    line = one_error_line(run("jobs", "download", "--server", live_server, "-o", str(tmp_path / "d"), evil))
    assert "refusing to write output '../escape.txt' outside" in line
    assert not (tmp_path / "d").exists() and not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("args", [
    ("jobs", "show", "job_missing"), ("jobs", "logs", "-f", "job_missing"), ("jobs", "wait", "job_missing"),
    ("jobs", "cancel", "job_missing"), ("jobs", "download", "job_missing"),
])
def test_unknown_job_is_one_line(live_server, args):
    assert one_error_line(run(*args, "--server", live_server)) == "error: 404 job job_missing not found"


def test_server_errors_are_one_line(live_server):
    assert "unknown status 'bogus'" in one_error_line(run("jobs", "list", "--server", live_server, "--status", "bogus"))
    line = one_error_line(run("jobs", "list", "--server", "http://127.0.0.1:1"))
    assert line == "error: cannot reach stcloud at http://127.0.0.1:1 (is `stcloud serve` running?)"
    assert one_error_line(run("jobs", "show", "--server", "localhost:1", "job_x")).startswith(
        "error: cannot reach stcloud at localhost:1: ")


def test_a_server_that_is_not_stcloud_is_one_line():
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}"
        assert one_error_line(run("jobs", "list", "--server", url)) == \
            f"error: {url}/api/cloud/jobs did not answer with JSON (is --server an stcloud URL?)"
    finally:
        srv.shutdown()
        srv.server_close()


def test_token_is_sent_and_a_bad_one_is_one_line(make_app):
    app = make_app(STCLOUD_ADMIN_TOKEN="tok")
    with serve_in_thread(app) as url:
        assert "401" in one_error_line(run("jobs", "list", "--server", url))
        assert one_error_line(run("jobs", "show", "--server", url, "--token", "wrong", "job_x")) \
            == "error: 401 invalid API key or token"
        r = run("jobs", "list", "--server", url, "--token", "tok")
        assert r.exit_code == 0
        r = run("jobs", "list", "--server", url, env={"STCLOUD_ADMIN_TOKEN": "tok"})
        assert r.exit_code == 0


def test_completion_scripts():
    r = run("completion", "bash")
    assert r.exit_code == 0 and "_STCLOUD_COMPLETE=bash_complete" in r.stdout
    assert "complete -o nosort -F _stcloud_completion stcloud" in r.stdout
    assert run("completion", "zsh").stdout.startswith("#compdef stcloud")
    assert "complete --no-files --command stcloud" in run("completion", "fish").stdout
    r = CliRunner().invoke(main, ["completion", "tcsh"])
    assert r.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in r.output


def complete(words: str, env=None) -> list[str]:
    """What bash completion offers for ``words`` (the last one being completed)."""
    parts = words.split(" ")
    r = CliRunner().invoke(main, [], prog_name="stcloud", env={
        "_STCLOUD_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1), **(env or {})})
    assert r.exit_code == 0, r.output
    return [line.split(",", 1)[1] for line in r.stdout.splitlines() if line]


def test_completion_of_commands_and_job_ids(app, live_server):
    assert complete("stcloud jobs ") == ["approve", "cancel", "checkpoints", "compare", "download", "list", "logs", "reject",
                                         "resume", "show", "submit", "wait"]
    assert complete("stcloud comp") == ["completion"]
    a = make_job(app, "running", name="a", provider="worker")
    b = make_job(app, "completed", name="b", provider="local")
    assert sorted(complete(f"stcloud jobs show --server {live_server} job_")) == sorted([a, b])
    assert complete("stcloud jobs logs " + a[:-1], env={"STCLOUD_SERVER": live_server}) == [a]
    assert complete("stcloud jobs wait --server http://127.0.0.1:1 job_") == []  # no server: nothing offered
    # compare takes several: each word completes, without the ids already on the line
    assert sorted(complete(f"stcloud jobs compare --server {live_server} job_")) == sorted([a, b])
    assert complete(f"stcloud jobs compare --server {live_server} {a} job_") == [b]
