"""The loss history in ``job_loss_points``: appended from log lines on both update paths,
thinned past ``MAX_POINTS``, shown by the job page and compare, deleted with the job, and
moved out of ``progress["losses"]`` by migration 0016 (and back on downgrade)."""
from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from stcloud import db
from stcloud.cli import alembic_config
from stcloud.jobs import loss_points, service
from stcloud.models import Job, JobLossPoint
from tests.jobs.factories import make_job


def _points(app, job_id):
    with app.app_context(), db.session() as s:
        return loss_points.series(s.connection(), job_id)


def test_log_lines_append_points_and_the_row_keeps_only_scalars(app):
    job = make_job(app, "running", provider="worker")
    with app.app_context(), db.transaction() as s:
        service.append_log(s, s.get(Job, job), "step 1/10 loss=0.9\nno loss here\nstep 2/10 loss=0.4\n")
    with app.app_context(), db.transaction() as s:
        service.append_log(s, s.get(Job, job), "step 3/10 loss=0.6\n")
    assert _points(app, job) == [[1, 0.9], [2, 0.4], [3, 0.6]]
    with app.app_context(), db.session() as s:
        progress = s.get(Job, job).progress
    assert progress == {"step": 3, "total_steps": 10, "loss": 0.6, "best_loss": 0.4}


def test_history_is_thinned_past_the_cap_keeping_the_newest(app):
    job = make_job(app, "running", provider="worker")
    n = loss_points.MAX_POINTS + 250
    for start in range(1, n + 1, 50):  # batches, as a worker ships them
        with app.app_context(), db.transaction() as s:
            service.append_log(s, s.get(Job, job), "".join(
                f"step {i}/{n} loss={1 / i:.6f}\n" for i in range(start, min(start + 50, n + 1))))
    points = _points(app, job)
    assert len(points) <= loss_points.MAX_POINTS
    assert points[-1][0] == n and points[0][0] == 1
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    assert [p[0] for p in points[-100:]] == list(range(n - 99, n + 1))  # the newest stay dense


def test_job_page_draws_the_history_and_delete_removes_it(app, client):
    job = make_job(app, "running", provider="worker")
    with app.app_context(), db.transaction() as s:
        service.append_log(s, s.get(Job, job), "step 1/4 loss=0.4\nstep 2/4 loss=0.3\n")
    page = client.get(f"/jobs/{job}").get_data(as_text=True)
    assert "data-losses='[[1, 0.4], [2, 0.3]]'" in page
    with app.app_context(), db.transaction() as s:
        s.get(Job, job).status = "completed"
    assert client.delete(f"/api/cloud/jobs/{job}").status_code == 204
    with app.app_context(), db.session() as s:
        assert s.scalar(select(JobLossPoint.id).where(JobLossPoint.job_id == job)) is None


def test_migration_moves_the_history_out_of_progress_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0015_pipelines")
    eng = create_engine(url)
    history = [[10, 0.5], [20, 0.25], [30, 0.3]]
    with eng.begin() as conn:
        for job_id, progress in (("job_a", {"step": 30, "total_steps": 40, "loss": 0.3, "losses": history}),
                                 ("job_b", {"step": 2, "stage": "training"})):
            conn.execute(text(
                "INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count, created_at, "
                "updated_at, progress, outputs, attempt, max_attempts, log_size, log_seq, poll_failures) VALUES "
                "(:id, 'n', 'worker', 'completed', '{}', '[]', 1, '2026-01-01 00:00:00.000000', "
                "'2026-01-01 00:00:00.000000', :progress, '[]', 1, 1, 0, 0, 0)"),
                {"id": job_id, "progress": json.dumps(progress)})
        # more than one batch of the migration (500 rows) with a history
        conn.execute(text(
            "INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count, created_at, "
            "updated_at, progress, outputs, attempt, max_attempts, log_size, log_seq, poll_failures) VALUES "
            "(:id, 'n', 'worker', 'completed', '{}', '[]', 1, '2026-01-01 00:00:00.000000', "
            "'2026-01-01 00:00:00.000000', :progress, '[]', 1, 1, 0, 0, 0)"),
            [{"id": f"job_m{i:04d}", "progress": json.dumps({"loss": 0.2, "losses": [[1, 0.3], [2, 0.2]]})}
             for i in range(520)])
    command.upgrade(cfg, "0016_loss_points")
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_loss_points WHERE job_id LIKE 'job_m%'")).scalar() == 1040
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE progress LIKE '%losses%'")).scalar() == 0
        conn.execute(text("DELETE FROM job_loss_points WHERE job_id LIKE 'job_m%'"))
        conn.execute(text("DELETE FROM jobs WHERE id LIKE 'job_m%'"))
        conn.commit()
    with Session(eng) as s:
        a, b = s.get(Job, "job_a").progress, s.get(Job, "job_b").progress
        rows = s.execute(select(JobLossPoint.job_id, JobLossPoint.step, JobLossPoint.loss)
                         .order_by(JobLossPoint.id)).all()
    assert a == {"step": 30, "total_steps": 40, "loss": 0.3, "best_loss": 0.25}
    assert b == {"step": 2, "stage": "training"}
    assert [tuple(r) for r in rows] == [("job_a", 10, 0.5), ("job_a", 20, 0.25), ("job_a", 30, 0.3)]
    command.downgrade(cfg, "0015_pipelines")
    with eng.connect() as conn:
        back = json.loads(conn.execute(text("SELECT progress FROM jobs WHERE id = 'job_a'")).scalar())
        assert back == {"step": 30, "total_steps": 40, "loss": 0.3, "losses": history}
        assert conn.execute(text("SELECT name FROM sqlite_master WHERE name = 'job_loss_points'")).first() is None
    eng.dispose()
