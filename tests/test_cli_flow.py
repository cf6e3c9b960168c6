"""The CLI against a real ``stcloud serve --local-worker`` process: the reference trainer runs
jobs on the sample data to completion, failure and cancellation, and the CLI follows, waits
for, shows and downloads them. One server for the module (an admin token on, as a deployed
server would have)."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest
import requests
from click.testing import CliRunner

from stcloud.cli import main
from tests.conftest import ROOT, ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
TOKEN = "cli-flow-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-flow")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("STCLOUD_PUBLIC_URL", "STCLOUD_DATABASE_URL", "REPLICATE_API_TOKEN", "HF_TOKEN"):
            mp.delenv(var, raising=False)
        # An empty step delay lets each job's config pace the reference trainer.
        proc = ServeProcess(home, args=("--local-worker",),
                            env={"STCLOUD_ADMIN_TOKEN": TOKEN, "STCLOUD_TRAINER_STEP_DELAY": ""})
        try:
            proc.wait_ready()
            deadline = time.time() + 30
            while time.time() < deadline:
                workers = requests.get(proc.url + "/api/cloud/workers", timeout=5,
                                       headers={"Authorization": f"Bearer {TOKEN}"}).json()["workers"]
                if workers and workers[0]["status"] == "idle":
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"the local worker did not come up: {proc.log_path.read_text()[-3000:]}")
            yield proc
        finally:
            proc.stop()


def cli(server, *args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False,
                              env={"STCLOUD_SERVER": server.url, "STCLOUD_ADMIN_TOKEN": TOKEN})


def write_job_files(server, tmp_path, **overrides) -> tuple[str, str]:
    sample = server.home / "sample"
    config = json.loads((sample / "sample_config.json").read_text())
    config.update({"max_train_steps": 40, "checkpointing_steps": 10, "step_delay_seconds": 0, **overrides})
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    return str(cfg), str(sample / "sample_dataloader.json")


def submit(server, tmp_path, name, **overrides) -> str:
    cfg, dl = write_job_files(server, tmp_path, **overrides)
    r = cli(server, "jobs", "submit", "--provider", "local", "--config", cfg, "--dataloader", dl,
            "--name", name, "--yes", "--no-progress", "--json")
    assert r.exit_code == 0, r.output
    job = json.loads(r.stdout)["job"]
    assert job["name"] == name and job["status"] == "queued"
    return job["id"]


def job_of(server, job_id) -> dict:
    r = cli(server, "jobs", "show", "--json", job_id)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["job"]


def test_follow_show_wait_list_and_download_a_completed_job(server, tmp_path):
    jid = submit(server, tmp_path, "cli-done")
    r = cli(server, "jobs", "logs", "-f", "--interval", "0.2", jid)
    assert r.exit_code == 0, r.output
    assert "step 40/40 loss=" in r.stdout and "stage: done" in r.stdout
    assert re.fullmatch(r"completed in \d+s, \$0\.00\n", r.stderr)  # no terminal here: no bar
    assert "\r" not in r.output

    r = cli(server, "jobs", "show", jid)
    assert r.exit_code == 0
    assert re.search(r"status\s+completed  \(local, worker wrk_\w+\)", r.stdout)
    assert re.search(r"progress\s+\[#{30}\] 100%  step 40/40  loss \d\.\d{4}\n", r.stdout)
    assert re.search(r"cost\s+\$0\.00 actual · estimate \$0\.00", r.stdout)
    assert re.search(r"ended\s+.* UTC  \(ran \d+s\)", r.stdout)
    assert re.search(rf"pytorch_lora_weights\.safetensors\s+\d+\.\d KiB  {server.url}/storage/download/outputs/"
                     rf"{jid}/pytorch_lora_weights\.safetensors", r.stdout)
    assert "last 10 log lines" in r.stdout and "  stage: done\n" in r.stdout

    r = cli(server, "jobs", "wait", jid)
    assert r.exit_code == 0 and re.fullmatch(r"completed in \d+s, \$0\.00\n", r.stdout)
    r = cli(server, "jobs", "wait", "--json", jid)
    assert r.exit_code == 0 and json.loads(r.stdout)["job"]["status"] == "completed"

    r = cli(server, "jobs", "list", "-q", "cli-done")
    assert r.exit_code == 0
    assert re.search(rf"^{jid}\s+completed\s+local\s+100% 40/40\s+\d\.\d{{4}}\s+\d+s\s+\$0\.00\s+cli-done$",
                     r.stdout, re.MULTILINE)
    assert json.loads(cli(server, "jobs", "list", "--json", "-q", "cli-done").stdout)["jobs"][0]["id"] == jid

    stored = server.home / "cloud_outputs" / "outputs" / jid
    r = cli(server, "jobs", "download", "-o", str(tmp_path / "out"), jid)
    assert r.exit_code == 0, r.output
    got = tmp_path / "out" / "pytorch_lora_weights.safetensors"
    assert got.read_bytes() == (stored / "pytorch_lora_weights.safetensors").read_bytes()
    assert f"{got}  " in r.stdout and re.search(r"downloaded 2 file\(s\), .* to ", r.stderr)
    from safetensors.numpy import load_file

    assert all(t.size for t in load_file(str(got)).values())
    r = cli(server, "jobs", "download", "--json", "-o", str(tmp_path / "again"), jid)
    data = json.loads(r.stdout)
    assert {f["name"] for f in data["files"]} == {"pytorch_lora_weights.safetensors", "training_summary.json"}
    job = job_of(server, jid)
    assert {f["name"]: f["sha256"] for f in data["files"]} == {o["name"]: o["sha256"] for o in job["outputs"]}
    assert not list((tmp_path / "again").glob("*.part"))

    # every uploaded checkpoint stays downloadable after the job completed
    r = cli(server, "jobs", "download", "--checkpoint", "20", "--json", "-o", str(tmp_path / "ck"), jid)
    assert r.exit_code == 0, r.stderr
    files = {f["name"] for f in json.loads(r.stdout)["files"]}
    assert {"checkpoint-20/pytorch_lora_weights.safetensors", "checkpoint-20/sample.png",
            "checkpoint-20/trainer_state.json"} <= files
    state = json.loads((tmp_path / "ck" / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    r = cli(server, "jobs", "checkpoints", jid)
    assert r.exit_code == 0 and [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["10", "20", "30", "40"]
    r = cli(server, "jobs", "download", "--checkpoint", "15", jid)
    assert r.exit_code == 1 and r.stderr == (f"error: job {jid} has no checkpoint at step 15 "
                                             "(stored: step 10, 20, 30, 40)\n")

    r = cli(server, "jobs", "cancel", jid)
    assert r.exit_code == 1 and r.stderr == f"error: job {jid} already finished (completed); nothing to cancel\n"


def test_a_failed_job_says_why_and_exits_1(server, tmp_path):
    # a value the submit API's field schema does not check (it refuses learning_rate=-1 at submit)
    jid = submit(server, tmp_path, "cli-bad", image_channels=2)
    r = cli(server, "jobs", "logs", "-f", "--interval", "0.2", jid)
    assert r.exit_code == 1, r.output
    assert "error: invalid config value image_channels=2" in r.stdout
    assert re.fullmatch(r"failed: trainer exited with code 2 — error: invalid config value image_channels=2: "
                        r"expected 1 \(grayscale\) or 3 \(RGB\) \(after \d+s, \$0\.00\)\n", r.stderr)
    r = cli(server, "jobs", "wait", jid)
    assert r.exit_code == 1 and r.stdout.startswith("failed: trainer exited with code 2")
    r = cli(server, "jobs", "show", jid)
    assert re.search(r"reason\s+trainer exited with code 2 — error: invalid config value", r.stdout)
    assert "outputs: none\n" in r.stdout
    r = cli(server, "jobs", "download", jid)
    assert r.exit_code == 1 and r.stderr == f"error: job {jid} has no outputs to download (failed)\n"


def test_cancel_a_running_job_then_download_its_last_checkpoint(server, tmp_path):
    jid = submit(server, tmp_path, "cli-cancel", max_train_steps=400, checkpointing_steps=10, step_delay_seconds=0.05)
    deadline = time.time() + 60
    while time.time() < deadline and ((job_of(server, jid).get("progress") or {}).get("step") or 0) < 15:
        time.sleep(0.3)
    r = cli(server, "jobs", "wait", "--timeout", "0.5", "--interval", "0.2", jid)
    assert r.exit_code == 2 and r.stderr == f"timeout: job {jid} is still running after 0s\n"
    r = cli(server, "jobs", "cancel", jid)
    assert r.exit_code == 0 and r.stdout == f"cancelled {jid}\n"
    r = cli(server, "jobs", "wait", jid)
    assert r.exit_code == 1 and r.stdout.startswith("cancelled: cancelled by user (after ")
    # the trainer saves a checkpoint where it stopped; the worker uploads it after the cancel
    deadline = time.time() + 30
    while time.time() < deadline:
        workers = requests.get(server.url + "/api/cloud/workers", timeout=5,
                               headers={"Authorization": f"Bearer {TOKEN}"}).json()["workers"]
        if workers[0]["status"] == "idle":  # it reported the end, after the last checkpoint
            break
        time.sleep(0.3)
    step = (job_of(server, jid).get("checkpoint") or {}).get("step")
    assert step and step >= 10
    r = cli(server, "jobs", "logs", "-f", "--interval", "0.2", jid)
    assert re.search(r"^step \d+/400 loss=", r.stdout, re.MULTILINE)
    # (a cancelled worker job gets no actual cost today: the worker's finish report does not
    # finalize it once the job is no longer running; reported to the lead)
    assert r.exit_code == 1 and re.fullmatch(r"cancelled: cancelled by user \(after \d+s, (\$0\.00|cost unknown)\)\n",
                                             r.stderr)
    r = cli(server, "jobs", "download", "--checkpoint", str(step), "--json", "-o", str(tmp_path / "ck"), jid)
    assert r.exit_code == 0, r.output
    files = {f["name"]: f for f in json.loads(r.stdout)["files"]}
    assert f"checkpoint-{step}/pytorch_lora_weights.safetensors" in files
    state = json.loads((tmp_path / "ck" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    assert state["global_step"] == step
    r = cli(server, "jobs", "cancel", "--json", jid)
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == f"error: job {jid} already finished (cancelled); nothing to cancel\n"


@pytest.mark.parametrize("rows_cols", [(40, 120), None], ids=["sized", "unsized"])
def test_follow_draws_a_progress_bar_on_a_terminal(server, tmp_path, rows_cols):
    jid = submit(server, tmp_path, "cli-tty", max_train_steps=60, step_delay_seconds=0.05)
    master, slave = pty.openpty()
    if rows_cols:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *rows_cols, 0, 0))
    env = {**os.environ, "STCLOUD_SERVER": server.url, "STCLOUD_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stcloud.cli", "jobs", "logs", "-f", "--interval", "0.2", jid],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(ROOT), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(30) == 0
    out = b"".join(chunks).decode("utf-8", "replace")
    bars = re.findall(r"(\w+):\s+(\d+)%\|[^|]*\| (\d+)/60 \[[^\]]*step/s", out)
    assert bars, out[-2000:]
    steps = [int(b[2]) for b in bars]
    assert steps[-1] == 60 and len(set(steps)) >= 2  # it moved while the job ran
    assert any(b[0] == "running" for b in bars) and bars[-1][0] == "completed"
    assert "step 60/60 loss=" in out
    assert re.search(r"completed in \d+s, \$0\.00\r?\n", out)


def test_api_refusals_are_one_line(server, tmp_path):
    cfg, dl = write_job_files(server, tmp_path)
    r = cli(server, "jobs", "submit", "--provider", "replicate", "--config", cfg, "--dataloader", dl,
            "--yes", "--no-progress")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: 400 REPLICATE_API_TOKEN not set") and len(r.stderr.splitlines()) == 1
    r = CliRunner().invoke(main, ["jobs", "list", "--server", server.url, "--token", "wrong"],
                           env={"STCLOUD_ADMIN_TOKEN": None})
    assert r.exit_code == 1 and r.stderr == "error: 401 invalid API key or token\n"
    r = CliRunner().invoke(main, ["jobs", "show", "job_nope"], env={"STCLOUD_SERVER": server.url,
                                                                   "STCLOUD_ADMIN_TOKEN": TOKEN})
    assert r.exit_code == 1 and r.stderr == "error: 404 job job_nope not found\n"

