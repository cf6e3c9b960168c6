"""Issue 17's "Done when", walked in the terminal against a real ``stcloud serve
--local-worker`` (an admin token on, as a deployed server has): three trainings with different
learning rates submitted with ``stcloud jobs submit``, watched with ``jobs list``, waited for
with ``jobs wait``, compared with ``jobs compare`` (human table and ``--json``), a notification
for each end (a Slack-style receiver and a Standard Webhooks verifier on loopback), and the
best run's last checkpoint (by final loss) downloaded with ``jobs download --checkpoint N``.
The terminal transcript goes to ``STCLOUD_SCREENSHOTS`` (default: the test's tmp dir)."""
from __future__ import annotations

import json
import re

import pytest
import requests
from click.testing import CliRunner
from standardwebhooks import Webhook

from stcloud.cli import main
from tests.web.walkthrough import (
    EVERY,
    LEARNING_RATES,
    STEP_DELAY,
    STEPS,
    job_end_messages,
    receiver,  # noqa: F401 - fixture
    screenshot_dir,
    server,  # noqa: F401 - fixture
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TOKEN = "walkthrough-cli-token"
SERVER_ENV = {"STCLOUD_ADMIN_TOKEN": TOKEN}  # a deployed server's admin token (the `server` fixture)



def test_three_learning_rates_in_the_terminal(server, receiver, tmp_path):
    transcript: list[str] = []

    def cli(*args, code=0):
        r = CliRunner().invoke(main, list(args), catch_exceptions=False,
                               env={"STCLOUD_SERVER": server.url, "STCLOUD_ADMIN_TOKEN": TOKEN})
        transcript.append(f"$ stcloud {' '.join(args)}\n{r.stdout}{r.stderr}")
        assert r.exit_code == code, r.output
        return r

    # notifications (set once over the API, as an admin would): Slack + a signed webhook
    put = requests.put(f"{server.url}/api/cloud/settings/notifications", timeout=10,
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"slack": {"enabled": True, "url": f"{receiver.url}/slack"},
                             "webhook": {"enabled": True, "url": f"{receiver.url}/hook"}})
    assert put.status_code == 200, put.text
    secret = put.json()["webhook_secret"]

    sample = server.home / "sample"
    base = json.loads((sample / "sample_config.json").read_text())
    names, ids = [], []
    for lr in LEARNING_RATES:
        name = f"cli-lr-{lr:g}"
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(json.dumps({**base, "learning_rate": lr, "max_train_steps": STEPS,
                                   "checkpointing_steps": EVERY, "step_delay_seconds": STEP_DELAY}))
        r = cli("jobs", "submit", "--provider", "local", "--config", str(cfg),
                "--dataloader", str(sample / "sample_dataloader.json"), "--name", name, "--no-progress")
        jid = r.stdout.strip()
        assert re.fullmatch(r"job_[0-9a-z]{26}", jid) and f"submitted {jid} to local" in r.stderr
        names.append(name)
        ids.append(jid)

    r = cli("jobs", "list", "-q", "cli-lr-")  # watch them: three rows, newest first
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ids[::-1]

    for jid in ids:
        r = cli("jobs", "wait", jid)
        assert re.fullmatch(r"completed in \d+s, \$0\.00\n", r.stdout)
    r = cli("jobs", "list", "-q", "cli-lr-")
    for jid, name in zip(ids, names, strict=True):
        assert re.search(rf"^{jid}\s+completed\s+local\s+100% {STEPS}/{STEPS}\s+\d\.\d{{4}}\s+\d+s\s+\$0\.00\s+{name}$",
                         r.stdout, re.MULTILINE)

    # compare: the people's table, then the script's JSON
    r = cli("jobs", "compare", *ids)
    samples_at = ",".join(str(s) for s in range(EVERY, STEPS + 1, EVERY))
    for jid, name, lr in zip(ids, names, LEARNING_RATES, strict=True):
        assert re.search(rf"^[* ] {jid}\s+{name}\s+completed\s+local\s+\d\.\d{{4}}\s+\d\.\d{{4}}\s+\d+s\s+\$0\.00\s+"
                         rf"{STEPS}/{STEPS}\s+{lr:g}\s+{samples_at}$", r.stdout, re.MULTILINE), r.stdout
    assert re.search(r"^  config\.learning_rate\s+", r.stdout, re.MULTILINE)
    data = json.loads(cli("jobs", "compare", "--json", *ids).stdout)
    finals = {j["id"]: j["final_loss"] for j in data["jobs"]}
    best = min(finals, key=finals.get)
    assert re.search(rf"^\* {best}\s", r.stdout, re.MULTILINE)
    assert f"best final loss: {best} " in r.stdout
    assert all(len(j["series"]) >= 2 and {s["step"] for s in j["samples"]} == set(range(EVERY, STEPS + 1, EVERY))
               for j in data["jobs"])

    # a notification for each end
    messages = wait_for(lambda: len(job_end_messages(receiver, names)) == 3 and job_end_messages(receiver, names),
                        60, "three job-end notifications")
    assert all("completed" in text for text in messages.values())
    wait_for(lambda: len([1 for p, _h, _b in receiver.requests if p == "/hook"]) >= 3, 30, "three signed webhooks")
    verified = [Webhook(secret).verify(b, {k.lower(): v for k, v in h.items()})
                for p, h, b in receiver.requests if p == "/hook"]
    assert sorted(v["data"]["job"]["id"] for v in verified if v["type"] == "job.completed") == sorted(ids)

    # the best run's last checkpoint
    out = tmp_path / "best"
    r = cli("jobs", "download", best, "--checkpoint", str(STEPS), "-o", str(out))
    got = out / f"checkpoint-{STEPS}" / "pytorch_lora_weights.safetensors"
    stored = server.home / "cloud_outputs" / "outputs" / best / "checkpoints" / f"checkpoint-{STEPS}"
    assert got.read_bytes() == (stored / "pytorch_lora_weights.safetensors").read_bytes()
    assert (out / f"checkpoint-{STEPS}" / "sample.png").read_bytes().startswith(b"\x89PNG")
    assert re.search(r"downloaded \d+ file\(s\), .* to ", r.stderr)

    (screenshot_dir(tmp_path) / "terminal-walkthrough.txt").write_text("\n".join(transcript))
