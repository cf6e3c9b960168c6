"""Real processes on loopback: `stcloud serve` processes sharing one database, and
`stcloud worker` agents running the reference trainer (or a trivial command)."""
from __future__ import annotations

import re
import signal
import sys
import threading
import time
from collections import Counter

import psutil
import pytest
import requests

from stcloud import db
from stcloud.models import JobEvent
from tests.workers.conftest import Admin, log_of
from tests.workers.helpers import queue_job

pytestmark = pytest.mark.slow

TRIVIAL = f"{sys.executable} -c \"print('stage: training'); print('step 1/1 loss=0.1 lr=1e-3')\""
SLOW_CONFIG = {"max_train_steps": 60, "checkpointing_steps": 10, "learning_rate": 3e-3, "seed": 3,
               "resolution": 16, "train_batch_size": 4, "lora_rank": 2}


def servers(serve_process, shared, n=2, timeout=None, scheduler_on_first=True):
    env = {"STCLOUD_DATABASE_URL": shared["db_url"]}
    if timeout:
        env["STCLOUD_WORKER_TIMEOUT"] = str(timeout)
    out = []
    for i in range(n):
        args = () if (i == 0 and scheduler_on_first) else ("--no-scheduler",)
        out.append(serve_process(home=shared["server_home"], args=args, env=env))
    return out


def trainers_of(work_dir_fragment: str) -> list[psutil.Process]:
    """Reference-trainer processes whose working directory is under this test's agent work dir
    (its full path: other xdist workers run trainers of their own)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "stcloud.trainer" in " ".join(p.info["cmdline"] or []) and work_dir_fragment in p.cwd() \
                    and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def accepted_claims(app, job_ids) -> Counter:
    with app.app_context(), db.session() as s:
        rows = s.query(JobEvent.job_id).filter(JobEvent.job_id.in_(job_ids), JobEvent.from_status == "queued",
                                               JobEvent.to_status == "running", JobEvent.accepted.is_(True)).all()
    return Counter(r.job_id for r in rows)


def test_fifty_jobs_two_servers_two_agents_each_claimed_once(serve_process, shared, agents):
    app = shared["app"]
    s1, s2 = servers(serve_process, shared)
    admin = Admin(s1.url)
    w1, w2 = admin.worker("agent-a"), admin.worker("agent-b")
    job_ids = [queue_job(app, name=f"j{i}", archive=shared["archive"]) for i in range(50)]
    t0 = time.time()
    a1 = agents.start(s1.url, w1["token"], "--trainer-command", TRIVIAL)
    a2 = agents.start(s2.url, w2["token"], "--trainer-command", TRIVIAL)
    deadline = time.time() + 120
    while time.time() < deadline:
        jobs = admin.get("/api/cloud/jobs?limit=100")["jobs"]
        if sum(j["status"] == "completed" for j in jobs) == 50:
            break
        assert a1.poll() is None and a2.poll() is None, log_of(a1)[-2000:] + log_of(a2)[-2000:]
        time.sleep(0.3)
    elapsed = time.time() - t0
    jobs = {j["id"]: j for j in admin.get("/api/cloud/jobs?limit=100")["jobs"]}
    assert Counter(j["status"] for j in jobs.values()) == {"completed": 50}, log_of(a1)[-3000:]
    claims = accepted_claims(app, job_ids)
    assert set(claims) == set(job_ids) and set(claims.values()) == {1}  # each claimed exactly once
    by_worker = Counter(jobs[j]["worker_id"] for j in job_ids)
    assert set(by_worker) == {w1["worker_id"], w2["worker_id"]}, by_worker  # both agents worked
    for j in job_ids:
        assert jobs[j]["attempt"] == 1
        assert len(re.findall(r"^step 1/1 ", admin.log(j), re.M)) == 1
    print(f"\n50 jobs through 2 agents / 2 servers in {elapsed:.1f}s; split {dict(by_worker)}")


def test_claim_race_many_claimers_two_servers(serve_process, shared):
    """Hammer claim from 8 workers through both servers at once: no job is leased twice."""
    app = shared["app"]
    s1, s2 = servers(serve_process, shared)
    admin = Admin(s1.url)
    tokens = [admin.worker(f"racer-{i}")["token"] for i in range(8)]
    job_ids = [queue_job(app, name=f"r{i}", archive=False) for i in range(60)]
    got: dict[str, list[str]] = {}
    errors = []

    def racer(i, token):
        url = (s1.url, s2.url)[i % 2]
        h = {"Authorization": f"Bearer {token}"}
        sess = requests.Session()
        sess.post(url + "/api/workers/register", json={}, headers=h, timeout=15)
        mine = got.setdefault(token, [])
        empty = 0
        while empty < 3:
            r = sess.post(url + "/api/workers/claim", headers=h, timeout=30)
            if r.status_code == 204:
                empty += 1
                continue
            if r.status_code != 200:
                errors.append((r.status_code, r.text))
                return
            jid = r.json()["job"]["id"]
            mine.append(jid)
            c = sess.post(f"{url}/api/workers/jobs/{jid}/complete", json={"status": "completed", "exit_code": 0},
                          headers=h, timeout=15)
            if c.status_code != 200:
                errors.append((c.status_code, c.text))

    threads = [threading.Thread(target=racer, args=(i, t)) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    claimed = [j for lst in got.values() for j in lst]
    assert sorted(claimed) == sorted(job_ids)  # every job exactly once across all claimers
    assert set(accepted_claims(app, job_ids).values()) == {1}
    assert sum(1 for lst in got.values() if lst) >= 2


def test_sigkill_agent_job_requeued_and_resumed_from_checkpoint(serve_process, shared, agents):
    app = shared["app"]
    (srv,) = servers(serve_process, shared, n=1, timeout=3)
    admin = Admin(srv.url)
    w1, w2 = admin.worker("doomed"), admin.worker("rescuer")
    jid = queue_job(app, name="resume me", config=SLOW_CONFIG, archive=shared["archive"])
    a1 = agents.start(srv.url, w1["token"], env={"STCLOUD_TRAINER_STEP_DELAY": "0.1"})
    job = admin.wait_job(jid, lambda j: (j.get("checkpoint") or {}).get("step", 0) >= 20, timeout=60,
                         what="a checkpoint at step >= 20 uploaded")
    assert job["worker_id"] == w1["worker_id"] and job["status"] == "running"
    a1.send_signal(signal.SIGKILL)
    a1.wait(10)
    killed_at = time.time()
    # the orphaned trainer dies with its agent (PR_SET_PDEATHSIG)
    deadline = time.time() + 15
    while time.time() < deadline and trainers_of(str(agents.tmp / "agent-0")):
        time.sleep(0.2)
    assert not trainers_of(str(agents.tmp / "agent-0"))

    agents.start(srv.url, w2["token"], env={"STCLOUD_TRAINER_STEP_DELAY": "0.01"})
    requeued = admin.wait_job(jid, lambda j: j["attempt"] == 2, timeout=30, what="re-queued as attempt 2")
    # not before the lease ran out: timeout 3 s after the last heartbeat (beats every 1 s)
    assert time.time() - killed_at >= 1.5
    done = admin.wait_job(jid, lambda j: j["status"] in ("completed", "failed"), timeout=90, what="finished")
    assert done["status"] == "completed", done.get("error")
    assert done["worker_id"] == w2["worker_id"] and done["attempt"] == 2
    text = admin.log(jid)
    m = re.search(r"resumed from checkpoint (\S+) at step (\d+)", text)
    assert m and int(m.group(2)) >= 20, text[-3000:]
    assert int(m.group(2)) == requeued["checkpoint"]["step"] or int(m.group(2)) > 0
    events = admin.get(f"/api/cloud/jobs/{jid}/events")["events"]
    lost = [e for e in events if e["from"] == "running" and e["to"] == "queued"]
    assert len(lost) == 1 and "doomed lost" in lost[0]["detail"] and "no heartbeat" in lost[0]["detail"]
    assert done["progress"]["resumes"][-1]["step"] == int(m.group(2))
    # outputs are in the S3 endpoint
    names = {o["name"] for o in done["outputs"]}
    assert "pytorch_lora_weights.safetensors" in names
    stored = shared["server_home"] / "cloud_outputs" / "outputs" / jid / "pytorch_lora_weights.safetensors"
    assert stored.is_file() and stored.stat().st_size > 0
    from safetensors.numpy import load_file

    tensors = load_file(str(stored))
    assert tensors and all(v.size for v in tensors.values())
    # the job page shows both attempts and where the second resumed
    html = requests.get(f"{srv.url}/jobs/{jid}", timeout=10).text
    if "job-attempts" in html:
        assert f"checkpoint at step <strong>{requeued['checkpoint']['step']}</strong>" in html


def test_cancel_reaches_a_running_trainer(serve_process, shared, agents):
    app = shared["app"]
    (srv,) = servers(serve_process, shared, n=1, timeout=6)  # heartbeats every 2 s
    admin = Admin(srv.url)
    w = admin.worker("canceller")
    jid = queue_job(app, name="cancel me", config={**SLOW_CONFIG, "max_train_steps": 2000},
                    archive=shared["archive"])
    nxt = queue_job(app, name="after", config={**SLOW_CONFIG, "max_train_steps": 5}, archive=shared["archive"])
    a = agents.start(srv.url, w["token"], env={"STCLOUD_TRAINER_STEP_DELAY": "0.05"})
    admin.wait_job(jid, lambda j: (j["progress"] or {}).get("step", 0) >= 3, timeout=60, what="training")
    assert trainers_of(str(agents.tmp / "agent-0"))
    t0 = time.time()
    assert admin.post(f"/api/cloud/jobs/{jid}/cancel")["job"]["status"] == "cancelled"
    deadline = time.time() + 20
    while time.time() < deadline and trainers_of(str(agents.tmp / "agent-0")):
        time.sleep(0.1)
    assert not trainers_of(str(agents.tmp / "agent-0")), "trainer still running after cancel"
    stopped_in = time.time() - t0
    assert stopped_in < 20
    deadline = time.time() + 15
    while time.time() < deadline and "stage: cancelled" not in admin.log(jid):
        time.sleep(0.2)
    assert "stage: cancelled" in admin.log(jid)  # the trainer's own SIGTERM handling ran
    assert admin.job(jid)["status"] == "cancelled"
    # the progress is kept: a checkpoint at the step the trainer stopped at, reported by the
    # worker after the cancel (checkpoints are every 10 steps; this one is in between)
    # (log lines written before the cancel may still be shipped after it: wait for the report
    # of the last checkpoint the trainer saved, not for any checkpoint line)
    def last_saved() -> list[int]:
        return [int(n) for n in re.findall(r"checkpoint saved: \S*checkpoint-(\d+)", admin.log(jid))]

    deadline = time.time() + 20
    while time.time() < deadline and not (
            (saved := last_saved()) and (admin.job(jid)["checkpoint"] or {}).get("step") == saved[-1]):
        time.sleep(0.2)
    ckpt = admin.job(jid)["checkpoint"]
    saved = last_saved()
    assert ckpt and ckpt["step"] == saved[-1] >= 3 and ckpt["key"].endswith(f"checkpoint-{saved[-1]}")
    # the worker is free again and takes the next job
    done = admin.wait_job(nxt, lambda j: j["status"] == "completed", timeout=60, what="next job completed")
    assert done["worker_id"] == w["worker_id"]
    assert a.poll() is None
    print(f"\ntrainer stopped {stopped_in:.1f}s after cancel")


def test_drain_finishes_the_job_then_the_agent_exits(serve_process, shared, agents):
    app = shared["app"]
    (srv,) = servers(serve_process, shared, n=1)
    admin = Admin(srv.url)
    w = admin.worker("drainee")
    j1 = queue_job(app, name="finish me", config={**SLOW_CONFIG, "max_train_steps": 40}, archive=shared["archive"])
    a = agents.start(srv.url, w["token"], env={"STCLOUD_TRAINER_STEP_DELAY": "0.05"})
    admin.wait_job(j1, lambda j: j["status"] == "running", timeout=30, what="running")
    j2 = queue_job(app, name="not me", archive=False)
    assert admin.post(f"/api/cloud/workers/{w['worker_id']}/drain")["worker"]["status"] == "draining"
    assert admin.wait_job(j1, lambda j: j["status"] == "completed", timeout=60, what="completed")
    a.wait(30)
    assert a.returncode == 0 and "drained" in log_of(a)
    assert admin.job(j2)["status"] == "queued"
    wk = admin.get(f"/api/cloud/workers/{w['worker_id']}")["worker"]
    assert wk["status"] == "offline" and wk["draining"] is True


def test_token_rotation_and_bad_token_stop_the_agent(serve_process, shared, agents):
    (srv,) = servers(serve_process, shared, n=1)
    admin = Admin(srv.url)
    bad = agents.start(srv.url, "stw_not-a-token")
    assert bad.wait(30) == 3 and "refused" in log_of(bad)
    w = admin.worker("rotated")
    a = agents.start(srv.url, w["token"])
    deadline = time.time() + 20
    while time.time() < deadline and admin.get(f"/api/cloud/workers/{w['worker_id']}")["worker"]["status"] != "idle":
        time.sleep(0.2)
    new = admin.post(f"/api/cloud/workers/{w['worker_id']}/rotate-token")
    assert a.wait(30) == 3  # the old token is refused at the next heartbeat/claim
    r = requests.post(srv.url + "/api/workers/heartbeat", json={}, timeout=10,
                      headers={"Authorization": f"Bearer {w['token']}"})
    assert r.status_code == 401
    r = requests.post(srv.url + "/api/workers/heartbeat", json={}, timeout=10,
                      headers={"Authorization": f"Bearer {new['token']}"})
    assert r.status_code == 200


def test_agent_survives_a_server_restart_without_duplicate_logs(serve_process, shared, agents):
    app = shared["app"]
    (srv,) = servers(serve_process, shared, n=1, timeout=60)
    admin = Admin(srv.url)
    w = admin.worker("steadfast")
    cfg = {**SLOW_CONFIG, "max_train_steps": 80, "logging_steps": 1}
    jid = queue_job(app, name="restart", config=cfg, archive=shared["archive"])
    a = agents.start(srv.url, w["token"], env={"STCLOUD_TRAINER_STEP_DELAY": "0.05"})
    admin.wait_job(jid, lambda j: (j["progress"] or {}).get("step", 0) >= 5, timeout=60, what="training")
    srv.stop()
    time.sleep(2.0)  # the trainer keeps going; its lines are buffered
    srv2 = serve_process(home=shared["server_home"], port=srv.port,
                         env={"STCLOUD_DATABASE_URL": shared["db_url"], "STCLOUD_WORKER_TIMEOUT": "60"})
    done = Admin(srv2.url).wait_job(jid, lambda j: j["status"] in ("completed", "failed"), timeout=90,
                                    what="finished after the restart")
    assert done["status"] == "completed" and done["attempt"] == 1, done.get("error")
    text = Admin(srv2.url).log(jid)
    steps = re.findall(r"^step (\d+)/80 ", text, re.M)
    assert [int(x) for x in steps] == list(range(1, 81)), steps  # each line once, in order
    assert a.poll() is None


def test_sigterm_hands_the_job_back_at_once(serve_process, shared, agents):
    """A preemption notice (SIGTERM): the agent stops its trainer and re-queues the job now,
    not after the (here 60 s) timeout; the checkpoint stays for the next worker."""
    app = shared["app"]
    (srv,) = servers(serve_process, shared, n=1, timeout=60)
    admin = Admin(srv.url)
    w = admin.worker("preemptible")
    jid = queue_job(app, name="preempted", config=SLOW_CONFIG, archive=shared["archive"])
    a = agents.start(srv.url, w["token"], env={"STCLOUD_TRAINER_STEP_DELAY": "0.05"})
    admin.wait_job(jid, lambda j: (j.get("checkpoint") or {}).get("step", 0) >= 10, timeout=60, what="checkpoint")
    t0 = time.time()
    a.send_signal(signal.SIGTERM)
    job = admin.wait_job(jid, lambda j: j["status"] == "queued", timeout=15, what="handed back")
    assert time.time() - t0 < 15 and job["attempt"] == 2 and job["checkpoint"]["step"] >= 10
    assert a.wait(15) == 0
    assert not trainers_of(str(agents.tmp / "agent-0"))
    events = admin.get(f"/api/cloud/jobs/{jid}/events")["events"]
    assert any(e["to"] == "queued" and "preemptible stopped" in (e["detail"] or "") for e in events)
    assert admin.get(f"/api/cloud/workers/{w['worker_id']}")["worker"]["status"] == "offline"


def test_embedded_style_agent_waits_while_drained_and_resumes(serve_process, shared, agents):
    app = shared["app"]
    (srv,) = servers(serve_process, shared, n=1, timeout=3)  # heartbeats every second
    admin = Admin(srv.url)
    w = admin.worker("patient")
    admin.post(f"/api/cloud/workers/{w['worker_id']}/drain")
    a = agents.start(srv.url, w["token"], "--stay-when-drained", "--trainer-command", TRIVIAL)
    jid = queue_job(app, name="later", archive=False)
    time.sleep(2.5)
    assert a.poll() is None and admin.job(jid)["status"] == "queued"
    assert admin.get(f"/api/cloud/workers/{w['worker_id']}")["worker"]["status"] == "draining"
    admin.post(f"/api/cloud/workers/{w['worker_id']}/resume")
    assert admin.wait_job(jid, lambda j: j["status"] == "completed", timeout=20, what="completed")


def test_cancel_kills_a_trainer_that_ignores_sigterm(serve_process, shared, agents):
    app = shared["app"]
    (srv,) = servers(serve_process, shared, n=1, timeout=3)
    admin = Admin(srv.url)
    w = admin.worker("stubborn")
    stubborn = (f"{sys.executable} -c \"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                f"print('stage: training', flush=True); print('step 1/100 loss=1.0', flush=True); time.sleep(120)\"")
    jid = queue_job(app, name="stubborn", archive=False)
    a = agents.start(srv.url, w["token"], "--trainer-command", stubborn, "--grace-seconds", "1")
    admin.wait_job(jid, lambda j: (j["progress"] or {}).get("step") == 1, timeout=20, what="started")
    t0 = time.time()
    admin.post(f"/api/cloud/jobs/{jid}/cancel")
    deadline = time.time() + 15
    while time.time() < deadline and "SIGKILL" not in admin.log(jid):
        time.sleep(0.2)
    text = admin.log(jid)
    assert "SIGTERM" in text and "SIGKILL" in text, text
    assert time.time() - t0 < 10
    wk = admin.get(f"/api/cloud/workers/{w['worker_id']}")["worker"]
    deadline = time.time() + 10
    while time.time() < deadline and wk["status"] != "idle":
        time.sleep(0.2)
        wk = admin.get(f"/api/cloud/workers/{w['worker_id']}")["worker"]
    assert wk["status"] == "idle" and a.poll() is None
