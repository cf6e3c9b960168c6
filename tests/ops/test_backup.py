"""``stcloud backup`` / ``stcloud restore``: an online snapshot while ``stcloud serve`` writes,
then wipe, restore, and the same jobs, outputs and secrets come back."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import threading

import requests

from stcloud import create_app, db, secrets
from stcloud.models import Job
from tests.conftest import ROOT

ADMIN = "backup-admin-token"


def cli(home, *args, env=None):
    full = {k: v for k, v in os.environ.items() if k != "STCLOUD_DATABASE_URL"}
    full.update({"STCLOUD_HOME": str(home), **(env or {})})
    return subprocess.run([sys.executable, "-m", "stcloud.cli", *args], env=full, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)


def jobs_in(db_file) -> list[tuple]:
    conn = sqlite3.connect(db_file)
    try:
        return conn.execute("SELECT id, name, status, cost_usd FROM jobs ORDER BY id").fetchall()
    finally:
        conn.close()


def files_of(home) -> dict:
    """Secrets, outputs and configs: what the round trip must keep besides the database."""
    files = {p.relative_to(home).as_posix(): p.read_bytes()
             for sub in ("cloud_outputs", "configs") for p in (home / sub).rglob("*") if p.is_file()}
    return {"secrets": secrets.get_many(home, ""), "files": files,
            "secrets_mode": oct((home / "secrets.enc").stat().st_mode & 0o777),
            "key_mode": oct((home / "secret.key").stat().st_mode & 0o777)}


def test_backup_while_serving_then_wipe_and_restore(serve_process, tmp_path, monkeypatch):
    monkeypatch.delenv("STCLOUD_DATABASE_URL", raising=False)
    home = tmp_path / "home"
    srv = serve_process(home=home, env={"STCLOUD_ADMIN_TOKEN": ADMIN})
    app = create_app({"STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": f"sqlite:///{home / 'stcloud.db'}"})
    with app.app_context(), db.transaction() as s:
        s.add_all([Job(name=f"job {i}", provider="local", status="completed", cost_usd=i / 10) for i in range(20)])
    secrets.put(home, "replicate_api_token", "r8_backup_test_token_0123456789")
    out = home / "cloud_outputs" / "outputs" / "job_1" / "lora.safetensors"
    out.parent.mkdir(parents=True)
    out.write_bytes(os.urandom(2 * 1024 * 1024))
    (home / "configs" / "sdxl.json").write_text('{"max_train_steps": 100}')

    # Keep writing while the backup runs: the snapshot is still one consistent state.
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            with app.app_context(), db.transaction() as s:
                s.add(Job(name=f"concurrent {n}", provider="local", status="queued"))
            n += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        made = cli(home, "backup", str(tmp_path / "stcloud-backup.tar.gz"))
    finally:
        stop.set()
        t.join()
    app.extensions["stcloud.db"].dispose()
    assert made.returncode == 0, made.stderr
    assert "backed up" in made.stdout and "database at revision" in made.stdout
    archive = tmp_path / "stcloud-backup.tar.gz"
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    srv.stop()

    # The snapshot is one consistent state of the database: the 20 jobs and some of the
    # concurrent ones. The restore must give back exactly that state.
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extract("database.sqlite3", tmp_path / "peek", filter="data")
    assert {"home/secrets.enc", "home/secret.key"} <= set(names) and "home/stcloud.db" not in names
    peek = sqlite3.connect(tmp_path / "peek" / "database.sqlite3")
    assert peek.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    peek.close()
    expected_jobs = jobs_in(tmp_path / "peek" / "database.sqlite3")
    assert sum(1 for j in expected_jobs if j[1].startswith("job ")) == 20
    expected_files = files_of(home)

    shutil.rmtree(home)
    home.mkdir()
    restored = cli(home, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert jobs_in(home / "stcloud.db") == expected_jobs
    after = files_of(home)
    assert after == expected_files
    assert after["secrets_mode"] == after["key_mode"] == "0o600"
    assert after["secrets"]["replicate_api_token"] == "r8_backup_test_token_0123456789"
    assert "cloud_outputs/outputs/job_1/lora.safetensors" in after["files"]

    # The restored home serves the same jobs.
    srv2 = serve_process(home=home, env={"STCLOUD_ADMIN_TOKEN": ADMIN})
    listed = requests.get(f"{srv2.url}/api/cloud/jobs?limit=200", headers={"Authorization": f"Bearer {ADMIN}"},
                          timeout=10).json()
    assert listed["total"] == len(expected_jobs)


def test_restore_refuses_a_home_with_data_unless_forced(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "db", "upgrade").returncode == 0
    secrets.put(home, "marker", "one")
    archive = tmp_path / "b.tar.gz"
    assert cli(home, "backup", str(archive)).returncode == 0
    secrets.put(home, "marker", "two")
    (home / "cloud_outputs" / "stray.bin").write_bytes(b"x")

    refused = cli(home, "restore", str(archive))
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0 and "--force" in refused.stderr
    assert secrets.get(home, "marker") == "two"

    forced = cli(home, "restore", "--force", str(archive))
    assert forced.returncode == 0, forced.stderr
    assert secrets.get(home, "marker") == "one"
    assert not (home / "cloud_outputs" / "stray.bin").exists()


def test_backup_inside_home_and_bad_archives_are_refused(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "db", "upgrade").returncode == 0
    inside = cli(home, "backup", str(home / "b.tar.gz"))
    assert inside.returncode == 1 and "outside STCLOUD_HOME" in inside.stderr
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    bad = cli(tmp_path / "empty", "restore", str(junk))
    assert bad.returncode == 1 and "not an stcloud backup" in bad.stderr


def test_postgresql_is_left_to_pg_dump(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    secrets.put(home, "marker", "pg")
    url = "postgresql+psycopg://stcloud@127.0.0.1:1/stcloud"
    made = cli(home, "backup", str(tmp_path / "pg.tar.gz"), env={"STCLOUD_DATABASE_URL": url})
    assert made.returncode == 0, made.stderr
    assert "pg_dump" in made.stderr and "not in this archive" in made.stderr
    with tarfile.open(tmp_path / "pg.tar.gz") as tar:
        assert "database.sqlite3" not in tar.getnames() and "home/secrets.enc" in tar.getnames()
