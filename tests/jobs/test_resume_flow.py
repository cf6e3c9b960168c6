"""Resume anywhere, end to end (issue 18): a Replicate job pushes a checkpoint to the built-in
S3 endpoint (SimpleTuner's publishing, checkpoint pushes on) and fails; it is resumed on the
local worker of a real ``stcloud serve`` from that step, completes with the full step count,
and the chain's cost is the sum of both attempts."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from stcloud.trainer.sample import ensure_sample
from tests.conftest import free_port
from tests.fakes.replicate_fake import FakeReplicate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOKEN = "r8_test_token"
TOTAL, PUSHED = 40, 20


@pytest.fixture
def fake():
    f = FakeReplicate(tokens=(TOKEN,))
    f.start()
    yield f
    f.stop()


def wait(what, fn, timeout=90, interval=0.3):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def job_of(url: str, job_id: str) -> dict:
    return requests.get(f"{url}/api/cloud/jobs/{job_id}", timeout=10).json()["job"]


def trainer_checkpoint(tmp_path: Path, config: dict, dataloader: Path, step: int) -> Path:
    """The checkpoint the trainer on Replicate saved at ``step`` (the same trainer, config and data)."""
    cfg = {**config, "max_train_steps": step, "checkpointing_steps": step, "resume_from_checkpoint": None}
    path = tmp_path / "remote-config.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "remote-output"
    proc = subprocess.run([sys.executable, "-m", "stcloud.trainer", "--config", str(path), "--dataloader",
                           str(dataloader), "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out / f"checkpoint-{step}"


def test_replicate_failure_resumed_on_the_local_worker(serve_process, fake, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    sample = ensure_sample(home / "sample")
    srv = serve_process(home=home, port=port, args=("--local-worker",), env={
        "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": fake.base_url, "STCLOUD_PUBLIC_URL": url,
        "STCLOUD_TRAINER_STEP_DELAY": "0"})
    config = json.loads(Path(sample["config_path"]).read_text())
    config.update({"max_train_steps": TOTAL, "checkpointing_steps": 10, "resume_from_checkpoint": None,
                   "checkpoints_total_limit": None})
    dataloader = json.loads(Path(sample["dataloader_path"]).read_text())

    # 1. on Replicate, delivered to this machine (checkpoint pushes on in publishing_config)
    r = requests.post(f"{srv.url}/api/cloud/jobs/submit", timeout=60, json={
        "provider": "replicate", "name": "resume-anywhere", "config": config, "dataloader_config": dataloader,
        "delivery": {"type": "builtin"}, "data_consent": True})
    assert r.status_code == 201, r.text
    first = r.json()["job"]
    pred = fake.predictions[first["provider_job_id"]]
    sent = json.loads(pred["input"]["config_json"])
    [entry] = [e for e in sent["publishing_config"] if e.get("stcloud_builtin")]
    assert entry["publish_checkpoints"] is True and entry["endpoint_url"] == f"{url}/api/cloud/storage"

    # 2. it trains, pushes its checkpoint at step 20, and dies
    fake.start(pred["id"], logs=f"step {PUSHED}/{TOTAL} loss=0.2\n")
    ckpt = trainer_checkpoint(tmp_path, config, Path(sample["dataloader_path"]), PUSHED)
    keys = fake.fail(pred["id"], "CUDA error: an illegal memory access", predict_time=90.0, checkpoint_dir=ckpt)
    assert keys is not None
    failed = wait("the Replicate job to fail", lambda: (j := job_of(srv.url, first["id"]))["status"] == "failed" and j)
    assert failed["cost_usd"] and failed["cost_usd"] > 0
    listing = requests.get(f"{srv.url}/api/cloud/jobs/{first['id']}/checkpoints", timeout=10).json()["checkpoints"]
    assert [ck["step"] for ck in listing] == [PUSHED] and listing[0]["downloadable"]
    assert any(smp["name"] == "sample.png" for smp in listing[0]["samples"])

    # 3. the plan: 20 steps left, on the local worker
    plan = requests.get(f"{srv.url}/api/cloud/jobs/{first['id']}/resume", params={"provider": "local"},
                        timeout=10).json()["plan"]
    assert (plan["step"], plan["remaining_steps"], plan["total_steps"], plan["provider"]) == (PUSHED, TOTAL - PUSHED,
                                                                                             TOTAL, "local")
    assert plan["chain_cost_usd"] == pytest.approx(failed["cost_usd"])

    # 4. resume there; it starts from step 20 and completes at step 40
    r = requests.post(f"{srv.url}/api/cloud/jobs/{first['id']}/resume", json={"provider": "local"}, timeout=60)
    assert r.status_code == 201, r.text
    second = r.json()["job"]
    assert second["provider"] == "local" and second["checkpoint"]["step"] == PUSHED
    done = wait("the resumed job to finish",
                lambda: (j := job_of(srv.url, second["id"]))["terminal"] and j, timeout=150)
    log = requests.get(f"{srv.url}/api/cloud/jobs/{second['id']}/logs", timeout=10).json()["text"]
    assert done["status"] == "completed", log[-3000:]
    assert re.search(rf"resumed from checkpoint \S+checkpoint-{PUSHED} at step {PUSHED}", log), log[-3000:]
    assert done["progress"]["step"] == TOTAL and done["progress"]["total_steps"] == TOTAL
    first_step = min(int(m) for m in re.findall(r"^step (\d+)/", log, re.M))
    assert first_step == PUSHED + 1  # nothing before the checkpoint was trained again
    assert any(o["name"] == "pytorch_lora_weights.safetensors" for o in done["outputs"])

    # 5. the chain across providers and its summed cost
    chain = requests.get(f"{srv.url}/api/cloud/jobs/{second['id']}/chain", timeout=10).json()
    assert [(a["provider"], a["status"], a["resume_step"]) for a in chain["attempts"]] == [
        ("replicate", "failed", None), ("local", "completed", PUSHED)]
    costs = [a["cost_usd"] or 0.0 for a in chain["attempts"]]
    assert chain["total_cost_usd"] == pytest.approx(sum(costs)) and chain["total_cost_usd"] >= failed["cost_usd"]
    page = requests.get(f"{srv.url}/jobs/{second['id']}/checkpoints", timeout=10).text
    assert "Attempts across providers" in page and first["id"] in page
