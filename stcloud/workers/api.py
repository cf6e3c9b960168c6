"""The worker (machine) API under ``/api/workers``: Bearer worker-token auth, no CSRF.

    POST /api/workers/register                {hostname, agent_version, gpus, labels, name, current_job_id}
    POST /api/workers/heartbeat               {job_id?, progress?} -> {cancel: [ids], drain, ...}
    POST /api/workers/claim?wait=N            -> 200 {job: {...}} | 204 (nothing to do) | 200 {job: null, drain: true}
                                              (held up to N s until a job is queued: workers/claims.py)
    POST /api/workers/goodbye                 the agent exits
    GET  /api/workers/jobs/<id>/archive       the dataset ZIP (holding worker only)
    POST /api/workers/jobs/<id>/logs          {seq, lines: [...]}
    POST /api/workers/jobs/<id>/progress      {progress: {...}}
    POST /api/workers/jobs/<id>/checkpoint    {key, step, files}
    POST /api/workers/jobs/<id>/complete      {status, exit_code, last_lines, outputs, error}
    POST /api/workers/jobs/<id>/release       {reason}

401 for a missing/bad token, 403 for a job this worker does not hold.

One-job mode (an agent a scheduler such as Slurm started for one job): ``Authorization:
Bearer stj_…`` (the per-job credential) + ``X-Stcloud-Job: <job id>``; the same calls, but
claim returns only that job (204 until it is claimable) and every other job answers 403.
"""
from __future__ import annotations

import logging
import os

from flask import Blueprint, g, jsonify, request, send_file

from stcloud.accounts import scope
from stcloud.api import validation
from stcloud.api.schemas import workers as schemas
from stcloud.api.spec import operation
from stcloud.errors import BadRequest, Forbidden, NotFound
from stcloud.web import auth
from stcloud.workers import claims, job_tokens, service

bp = auth.machine(Blueprint("workers_api", __name__, url_prefix="/api/workers"))


JOB_HEADER = "X-Stcloud-Job"
# What an agent may still send after its job ended (a cancelled trainer's last checkpoint).
LATE_REPORTS = frozenset({"workers_api.checkpoint", "workers_api.logs"})


@bp.before_request
def _authenticate():
    """A worker token, or a per-job credential (``stj_…`` + ``X-Stcloud-Job``) that reaches
    only that job: the agent a scheduler (Slurm) started for it. The client address is bound
    for the few things a worker does that the audit log records (``service._audit``)."""
    scope.bind_client(auth.client_addr())  # the request guard unbinds it when the request ends
    token = auth.bearer()
    if job_tokens.is_job_token(token):
        g.job_scope = request.headers.get(JOB_HEADER)
        g.worker_id = service.authenticate_job(g.job_scope, token, late_report=request.endpoint in LATE_REPORTS)
        other = (request.view_args or {}).get("job_id")
        if other is not None and other != g.job_scope:
            raise Forbidden(f"this credential is for job {g.job_scope}, not {other}")
    else:
        g.job_scope = None
        g.worker_id = service.authenticate(token)


@bp.post("/register")
@operation(body=schemas.RegisterBody, body_required=False, summary="An agent (re)starts", tags=["worker API"],
           responses={200: schemas.Registered})
def register():
    return jsonify(service.register(g.worker_id, validation.checked(schemas.RegisterBody, required=False)))


@bp.post("/heartbeat")
@operation(body=schemas.HeartbeatBody, body_required=False, summary="An agent is alive", tags=["worker API"],
           responses={200: schemas.HeartbeatAnswer})
def heartbeat():
    return jsonify(service.heartbeat(g.worker_id, validation.checked(schemas.HeartbeatBody, required=False)))


@bp.post("/claim")
@operation(summary="Claim the next job this worker matches", tags=["worker API"],
           responses={200: (schemas.Claim, "a job, or {job: null, drain: true}"), 204: (None, "nothing to run")})
def claim():
    wait = 0.0 if g.job_scope else claims.parse_wait(request.args.get("wait"))
    try:
        if g.job_scope:
            job = service.claim_job(g.worker_id, g.job_scope)
        else:
            job = claims.claim_waiting(g.worker_id, wait, service.claim,
                                       lambda: claims.candidates(g.worker_id, service.worker_pools))
    except service.Draining:
        return jsonify({"job": None, "drain": True})
    if job is None:
        return "", 204, {claims.WAIT_HEADER: f"{wait:g}"}
    return jsonify({"job": job})


@bp.post("/goodbye")
@operation(summary="An agent stops", tags=["worker API"], responses={204: None})
def goodbye():
    service.goodbye(g.worker_id)
    return "", 204


@bp.get("/jobs/<job_id>/archive")
@operation(summary="The job's dataset archive", tags=["worker API"], responses={200: "application/zip"})
def archive(job_id):
    path, sha256 = service.archive_for(g.worker_id, job_id)
    if not os.path.isfile(path):
        raise NotFound(f"the dataset archive of job {job_id} is missing on the server")
    resp = send_file(path, mimetype="application/zip", as_attachment=True,
                     download_name=f"{job_id}.zip", conditional=True, max_age=0)
    if sha256:
        resp.headers["X-Content-SHA256"] = sha256
    return resp


@bp.post("/jobs/<job_id>/logs")
@operation(body=schemas.LogsBody, summary="Append a batch of log lines", tags=["worker API"],
           responses={200: schemas.LogsAnswer})
def logs(job_id):
    body = validation.checked(schemas.LogsBody)
    return jsonify(service.report_logs(g.worker_id, job_id, body.get("seq"), body.get("lines")))


@bp.post("/jobs/<job_id>/progress")
@operation(body=schemas.ProgressBody, summary="Report training progress", tags=["worker API"],
           responses={200: schemas.ProgressAnswer})
def progress(job_id):
    body = validation.checked(schemas.ProgressBody)
    return jsonify(service.report_progress(g.worker_id, job_id, body.get("progress")))


@bp.post("/jobs/<job_id>/checkpoint")
@operation(body=schemas.CheckpointBody, summary="A checkpoint was uploaded", tags=["worker API"],
           responses={200: schemas.CheckpointAnswer})
def checkpoint(job_id):
    return jsonify(service.report_checkpoint(g.worker_id, job_id, validation.checked(schemas.CheckpointBody)))


@bp.post("/jobs/<job_id>/complete")
@operation(body=schemas.CompleteBody, summary="The trainer ended", tags=["worker API"],
           responses={200: schemas.StatusAnswer})
def complete(job_id):
    return jsonify(service.finish(g.worker_id, job_id, validation.checked(schemas.CompleteBody)))


@bp.post("/jobs/<job_id>/release")
@operation(body=schemas.ReleaseBody, body_required=False, summary="Give a job back to the queue",
           tags=["worker API"], responses={200: schemas.StatusAnswer})
def release(job_id):
    body = validation.checked(schemas.ReleaseBody, required=False)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("reason must be a string")
    return jsonify(service.release(g.worker_id, job_id, reason))


class _QuietPolls(logging.Filter):
    """Agents poll claim (204 when idle) and heartbeat every few seconds: keep those out of
    the request log so it still shows what people do."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("/api/workers/heartbeat " in msg or ("/api/workers/claim " in msg and '" 204' in msg))


def init_app(app):
    app.register_blueprint(bp)
    wz = logging.getLogger("werkzeug")
    if not any(isinstance(f, _QuietPolls) for f in wz.filters):
        wz.addFilter(_QuietPolls())
