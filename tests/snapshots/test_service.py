"""Snapshot service: commits per submit, secrets, diffs, no-git and broken-repo paths,
concurrency, and the exact re-run body (no submit service needed)."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from stcloud.jobs import rerun
from stcloud.snapshots import git as gitmod
from stcloud.snapshots import service
from tests.snapshots.helpers import (
    ALL_SECRETS,
    HF,
    PASSWORD,
    R8,
    S3_ACCESS,
    S3_SECRET,
    config,
    dataloader,
    everything_ever_committed,
    get_job,
    git,
    repo,
    seed_job,
)

# ---- names and secrets (pure) -----------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("my lora", "my-lora"),
    ("../../etc/passwd", "etc-passwd"),
    ("..", "unnamed"),
    (".git", "git"),
    ("a/b\\c", "a-b-c"),
    ("-rf --force", "rf-force"),
    ("", "unnamed"),
    (None, "unnamed"),
    ("flux_v2.1", "flux_v2.1"),
    ("我的模型", "我的模型"),
    ("x" * 300, "x" * 100),
])
def test_legacy_name(raw, expected):
    """The readable slug (the directory name before names were made collision-free)."""
    assert service.legacy_name(raw) == expected
    assert service.safe_name(raw).startswith(expected)


def test_strip_secrets_removes_keys_at_any_depth_and_keeps_settings():
    cfg = config(**{"--max_token_length": 512, "args": ["--hub_token", HF], "apiKey": "abc",
                    "hf_token": None})
    out = service.strip_secrets(cfg)
    text = json.dumps(out)
    for secret in ALL_SECRETS + ("abc",):
        assert secret not in text
    assert "--hub_token" not in out and "replicate_api_token" not in out and "apiKey" not in out
    assert out["webhook"] == {"url": "https://example.org/hook"}
    assert out["publishing_config"] == [{"provider": "s3", "bucket": "models", "region": "us-east-1",
                                         "base_path": "runs",
                                         "endpoint_url": "http://127.0.0.1:9/api/cloud/storage"}]
    # settings that merely look like secrets stay: numbers, nulls, tokenizer settings
    assert out["--tokenizer_max_length"] == 77 and out["--max_token_length"] == 512
    assert out["hf_token"] is None
    assert out["args"] == ["--hub_token", service.REDACTED]
    assert service.strip_secrets(dataloader())[0] == {
        "id": "photos", "type": "local", "instance_data_dir": "/data/set", "caption_strategy": "filename"}


def test_restore_secrets_round_trip_and_snapshot_wins():
    cfg = config(args=["--hub_token", HF])
    assert service.restore_secrets(service.strip_secrets(cfg), cfg) == cfg
    committed = service.strip_secrets(cfg)
    stored = {**cfg, "--learning_rate": 9.9, "--extra_added_later": True}
    restored = service.restore_secrets(committed, stored)
    assert restored["--learning_rate"] == cfg["--learning_rate"]  # the snapshot's value
    assert "--extra_added_later" not in restored
    assert restored["--hub_token"] == HF and restored["publishing_config"][0]["secret_key"] == S3_SECRET
    # entries the submit path appended do not shift secrets; a different entry gets none
    builtin = {"provider": "s3", "bucket": "outputs", "access_key": "JOBKEY", "secret_key": "JOBSECRET"}
    stored = {**cfg, "publishing_config": cfg["publishing_config"] + [builtin]}
    assert service.restore_secrets(committed, stored)["publishing_config"] == cfg["publishing_config"]
    stored = {**cfg, "publishing_config": [builtin]}
    assert service.restore_secrets(committed, stored)["publishing_config"] == committed["publishing_config"]


def test_commit_message_has_job_id_name_and_message():
    msg = service.commit_message("my-lora", "job_1", "lower lr\x00\x07 # not a comment")
    assert msg.splitlines()[0] == "Snapshot my-lora for job_1"
    assert "lower lr # not a comment" in msg
    assert msg.rstrip().endswith("Job-Id: job_1\nConfig-Name: my-lora")


# ---- snapshot per submit ---------------------------------------------------------------

def test_snapshot_commit_per_submit_with_sha_on_the_job(app, home):
    a = seed_job(app, message="first try")
    b = seed_job(app, cfg=config(lr=2e-4))
    c = seed_job(app)  # same config as the first: still its own commit
    root = repo(home)
    jobs = [get_job(app, j) for j in (a, b, c)]
    shas = [j.snapshot for j in jobs]
    assert all(j.snapshot_error is None for j in jobs)
    assert all(len(s) == 40 for s in shas) and len(set(shas)) == 3
    assert git(root, "rev-list", "--count", "HEAD").strip() == "3"
    assert git(root, "rev-parse", "HEAD").strip() == shas[2]
    for job_id, sha in zip((a, b, c), shas, strict=False):
        body = git(root, "log", "-1", "--format=%B", sha)
        assert job_id in body and "Config-Name: my-lora" in body
    assert "first try" in git(root, "log", "-1", "--format=%B", shas[0])
    # stable key order, pretty-printed, newline-terminated
    text = git(root, "show", f"{shas[0]}:my-lora/config.json")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert json.loads(git(root, "show", f"{shas[0]}:my-lora/dataloader.json"))[0]["id"] == "photos"
    # same content -> same blob (the config "sha")
    blob = lambda sha: git(root, "rev-parse", f"{sha}:my-lora/config.json").strip()  # noqa: E731
    assert blob(shas[0]) == blob(shas[2]) != blob(shas[1])
    # the committer is stcloud, not whoever runs the server
    assert git(root, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == \
        "stcloud <stcloud@localhost>|stcloud <stcloud@localhost>"


def test_secrets_absent_from_everything_in_the_repository(app, home):
    seed_job(app)
    seed_job(app, name="other", cfg=config(lr=3e-4, args=["--hub_token", HF]))
    everything = everything_ever_committed(repo(home))
    assert "my-lora/config.json" in everything and "--learning_rate" in everything
    for secret in ALL_SECRETS:
        assert secret not in everything
    for name in ('"--hub_token":', "secret_key", "access_key", "password", "replicate_api_token"):
        assert name not in everything
    # nor in the working tree
    for path in repo(home).glob("*/*.json"):
        assert not any(s in path.read_text() for s in ALL_SECRETS)


def test_name_is_sanitised_no_path_traversal(app, home, tmp_path):
    jid = seed_job(app, name="../../escape")
    assert get_job(app, jid).snapshot
    assert (repo(home) / service.safe_name("../../escape") / "config.json").exists()
    assert not (home.parent / "escape").exists() and not (tmp_path / "escape").exists()


def test_snapshots_switched_off_records_nothing(app, client, home):
    assert client.put("/api/cloud/configs/settings", json={"enabled": False}).get_json() == {"enabled": False}
    jid = seed_job(app)
    job = get_job(app, jid)
    assert job.snapshot is None and job.snapshot_error is None
    assert not (repo(home) / ".git").exists()
    assert client.put("/api/cloud/configs/settings", json={"enabled": "maybe"}).status_code == 400


# ---- no git, broken repository ---------------------------------------------------------

def test_no_git_binary_skips_with_a_notice(app, home, monkeypatch):
    monkeypatch.setattr(gitmod, "GIT_BINARY", "git-not-installed-here")
    assert service.snapshot_for_submit(str(home), "x", {"a": 1}, [], "job_1") == \
        (None, "git not installed: snapshot skipped")
    jid = seed_job(app)
    assert get_job(app, jid).snapshot_error == "git not installed: snapshot skipped"


def test_no_git_on_path(home, monkeypatch, tmp_path):
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert service.snapshot_for_submit(str(home), "x", {"a": 1}, [], "job_1") == \
        (None, "git not installed: snapshot skipped")


def test_broken_repository_reports_and_never_raises(app, home):
    first = seed_job(app)
    (repo(home) / ".git" / "HEAD").write_text("this is not a ref\n")
    jid = seed_job(app, cfg=config(lr=5e-4))
    job = get_job(app, jid)
    assert job.snapshot is None
    assert "broken" in job.snapshot_error and str(repo(home)) in job.snapshot_error
    assert get_job(app, first).snapshot  # the earlier job keeps its sha


def test_broken_repository_never_commits_into_an_enclosing_repository(tmp_path):
    outer = tmp_path / "project"
    outer.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, HOME=str(tmp_path))
    run = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=outer,  # noqa: E731
                                    env=env, check=True, capture_output=True, text=True).stdout
    run("init", "-q")
    run("commit", "-q", "--allow-empty", "-m", "project")
    home = outer / "instance"
    sha, err = service.snapshot_for_submit(str(home), "n", {"a": 1}, [], "job_1")
    assert sha and err is None
    (home / "configs" / ".git" / "HEAD").write_text("garbage")
    sha, err = service.snapshot_for_submit(str(home), "n", {"a": 2}, [], "job_2")
    assert sha is None and "broken" in err
    assert run("rev-list", "--count", "HEAD").strip() == "1"


def test_unserialisable_config_is_an_error_not_an_exception(home):
    sha, err = service.snapshot_for_submit(str(home), "x", {"a": object()}, [], "job_1")
    assert sha is None and "JSON" in err


def test_stale_index_lock_is_cleared(app, home):
    seed_job(app)
    lock = repo(home) / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 3600
    os.utime(lock, (old, old))
    jid = seed_job(app, cfg=config(lr=7e-4))
    assert get_job(app, jid).snapshot and not lock.exists()


def test_concurrent_submits_do_not_corrupt_the_repository(home):
    results = []

    def one(i):
        results.append(service.snapshot_for_submit(str(home), f"cfg{i % 3}", {"i": i}, [], f"job_{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 12 and all(sha and err is None for sha, err in results)
    root = repo(home)
    assert git(root, "rev-list", "--count", "HEAD").strip() == "12"
    git(root, "fsck", "--strict")
    job_ids = set(git(root, "log", "--format=%(trailers:key=Job-Id,valueonly,separator=)").split())
    assert job_ids == {f"job_{i}" for i in range(12)}


# ---- reading: history, files, a job's diff ----------------------------------------------

def test_job_snapshot_diff_against_previous_run_of_same_name(app, home):
    a = seed_job(app)
    seed_job(app, name="another config", cfg=config(lr=9e-4))  # other names are not "previous"
    b = seed_job(app, cfg=config(lr=2e-4, **{"--max_train_steps": 40}))
    snap = service.job_snapshot(home, service.JobRef.of(get_job(app, b)))
    assert snap["commit"] == get_job(app, b).snapshot
    assert snap["previous"]["job_id"] == a and snap["previous"]["commit"] == get_job(app, a).snapshot
    kinds = {(d["kind"], d["text"]) for d in snap["diff_lines"]}
    assert ("del", '-  "--learning_rate": 0.0001,') in kinds
    assert ("add", '+  "--learning_rate": 0.0002,') in kinds
    assert ("add", '+  "--max_train_steps": 40,') in kinds
    assert json.loads(snap["files"]["config.json"])["--learning_rate"] == 2e-4
    first = service.job_snapshot(home, service.JobRef.of(get_job(app, a)))
    assert first["previous"] is None and first["diff"] is None and first["files"]


def test_job_snapshot_without_snapshot_or_with_lost_commit(app, home):
    jid = seed_job(app, take_snapshot=False, snapshot_error="git not installed: snapshot skipped")
    snap = service.job_snapshot(home, service.JobRef.of(get_job(app, jid)))
    assert snap["commit"] is None and snap["snapshot_error"].startswith("git not installed")
    ghost = seed_job(app, take_snapshot=False, snapshot="ab" * 20)
    snap = service.job_snapshot(home, service.JobRef.of(get_job(app, ghost)))
    assert snap["files"] is None and "is missing" in snap["error"]
    seed_job(app)  # now the repository exists, but not that commit
    snap = service.job_snapshot(home, service.JobRef.of(get_job(app, ghost)))
    assert snap["files"] is None and "not in the config repository" in snap["error"]


# ---- exact re-run body (the submit call itself is tested in test_rerun.py) --------------

def source_of(app, job) -> rerun.RerunSource:
    """The re-run source (reading the job's secrets from the secret store needs the app)."""
    with app.app_context():
        return rerun.RerunSource.of(job)


def test_exact_rerun_body_comes_from_the_commit_with_secrets_restored(app, home):
    jid = seed_job(app, dataset_sha256="d" * 64, hardware="gpu-a100-large", max_cost_usd=12.5,
                   delivery={"target": "builtin"})
    job = get_job(app, jid)
    # the stored row drifted after submit; the snapshot is what ran
    src = source_of(app, job)
    src = rerun.RerunSource(**{**src.__dict__, "config": {**job.config, "--learning_rate": 0.5}})
    body, source = rerun.rerun_body(home, src, exact=True)
    assert source == "snapshot"
    assert body["config"] == config() and body["dataloader_config"] == dataloader()
    assert body["expected_dataset_sha256"] == "d" * 64 and body["rerun_of"] == jid
    assert (body["provider"], body["hardware"], body["max_cost_usd"], body["delivery"]) == \
        ("worker", "gpu-a100-large", 12.5, {"target": "builtin"})
    assert "data_consent" not in body
    # committing the re-run's config again gives the very same blob
    sha, _ = service.snapshot_for_submit(str(home), body["config_name"], body["config"],
                                         body["dataloader_config"], "job_rerun")
    blob = lambda s: git(repo(home), "rev-parse", f"{s}:my-lora/config.json").strip()  # noqa: E731
    assert blob(sha) == blob(job.snapshot)
    current, _ = rerun.rerun_body(home, source_of(app, job), exact=False, data_consent=True)
    assert "expected_dataset_sha256" not in current and current["data_consent"] is True


def test_exact_rerun_without_snapshot_uses_the_stored_config(app, home):
    jid = seed_job(app, take_snapshot=False, dataset_sha256="e" * 64)
    body, source = rerun.rerun_body(home, source_of(app, get_job(app, jid)), exact=True)
    assert source == "job" and body["config"] == config() and body["expected_dataset_sha256"] == "e" * 64


def test_exact_rerun_with_unreadable_snapshot_is_503_not_a_guess(app, home):
    from stcloud.errors import Unavailable

    jid = seed_job(app)
    (repo(home) / ".git" / "HEAD").write_text("garbage")
    with pytest.raises(Unavailable, match="broken"):
        rerun.rerun_body(home, source_of(app, get_job(app, jid)), exact=True)


def test_secret_values_never_in_rerun_source_files(app, home):
    """The committed files hold no secret; the re-run body has them back."""
    jid = seed_job(app)
    files = service.job_snapshot(home, service.JobRef.of(get_job(app, jid)))["files"]
    assert not any(s in files["config.json"] + files["dataloader.json"] for s in ALL_SECRETS)
    body, _ = rerun.rerun_body(home, source_of(app, get_job(app, jid)), exact=True)
    text = json.dumps(body)
    assert all(s in text for s in (HF, R8, S3_ACCESS, S3_SECRET, PASSWORD))
