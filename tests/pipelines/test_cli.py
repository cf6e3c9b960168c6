"""``stcloud pipelines submit|show|list|cancel`` against a live server; errors are one line."""
from __future__ import annotations

import json
import re

from click.testing import CliRunner

from stcloud.cli import main
from tests.jobs.factories import make_job


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_submit_show_list_cancel(app, live_server, tmp_path):
    parent = make_job(app, "running", name="parent", provider="local")
    doc = tmp_path / "p.yaml"
    doc.write_text(f"""
name: cli-pipe
defaults:
  provider: local
  config: {{max_train_steps: 5}}
  dataloader_config: [{{id: x, type: local, instance_data_dir: {tmp_path}}}]
steps:
  - name: first
    depends_on: [{parent}]
  - name: second
    depends_on: [first]
    on: any
""")
    r = run("pipelines", "submit", "--server", live_server, str(doc))
    assert r.exit_code == 0, r.output
    assert "cli-pipe" in r.output and "waiting" in r.output
    assert re.search(r"^  STEP\s+JOB\s+STATUS\s+PROVIDER\s+AFTER\s+NOTE$", r.stdout, re.MULTILINE)
    assert re.search(r"^  second\s+job_\w+\s+waiting\s+local\s+first \(on any\)", r.stdout, re.MULTILINE)
    r = run("pipelines", "list", "--server", live_server, "--json")
    pipe = json.loads(r.output)["pipelines"][0]
    assert [st["step"] for st in pipe["steps"]] == ["first", "second"]
    r = run("pipelines", "list", "--server", live_server)  # for people: an aligned table
    assert r.exit_code == 0 and r.stdout.splitlines()[0].split() == ["ID", "NAME", "STATUS", "STEPS"]
    assert re.search(rf"^{pipe['id']}\s+cli-pipe\s+waiting\s+2$", r.stdout, re.MULTILINE)
    r = run("pipelines", "show", "--server", live_server, pipe["id"])
    assert r.exit_code == 0 and f"waiting for {parent}" in r.output
    r = run("pipelines", "cancel", "--server", live_server, pipe["id"], "--json")
    assert r.exit_code == 0, r.output
    assert {st["status"] for st in json.loads(r.output)["pipeline"]["steps"]} == {"cancelled"}


def test_errors_are_one_line(app, live_server, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - name: a\n    depends_on: [b]\n  - name: b\n    depends_on: [a]\n"
                   "    provider: local\n")
    r = run("pipelines", "submit", "--server", live_server, str(bad))
    assert r.exit_code != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cycle" in lines[0]
    r = run("pipelines", "submit", "--server", live_server, str(tmp_path / "missing.yaml"))
    assert r.exit_code != 0 and "cannot read" in r.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [")
    r = run("pipelines", "submit", "--server", live_server, str(broken))
    assert r.exit_code != 0 and len(r.stderr.strip().splitlines()) == 1 and "not valid YAML" in r.stderr
    r = run("pipelines", "show", "--server", live_server, "pip_nope")
    assert r.exit_code != 0 and "404" in r.stderr
