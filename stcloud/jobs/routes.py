"""Jobs: REST API (/api/cloud/jobs) and the job list / job pages."""
from __future__ import annotations

from flask import Blueprint, jsonify, redirect, request, url_for

from stcloud import db, states
from stcloud.accounts import scope
from stcloud.api import validation
from stcloud.api.schemas import jobs as schemas
from stcloud.api.spec import operation
from stcloud.errors import BadRequest
from stcloud.jobs import enforce, listing, logread, loss_points, metrics, provider_state, service
from stcloud.jobs import progress as progress_mod
from stcloud.providers import registry
from stcloud.web import conditional
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import int_arg

api = Blueprint("jobs_api", __name__, url_prefix="/api/cloud/jobs")
pages = Blueprint("jobs_pages", __name__)
PAGE_SIZE = 25
LOG_PAGE_TAIL = 256 * 1024  # the job page opens on the last bytes of a long log


def _filters() -> listing.Filters:
    raw_status = request.args.get("status", "")
    statuses = [s.strip() for s in raw_status.split(",") if s.strip()]
    for s in statuses:
        if s not in states.STATUSES:
            raise BadRequest(f"unknown status {s!r}; expected one of {', '.join(states.STATUSES)}")
    provider = request.args.get("provider") or None
    if provider:
        registry.validate_name(provider)
    return listing.Filters(status=tuple(statuses), provider=provider, q=request.args.get("q") or None)


# ---- API -------------------------------------------------------------------------------

@api.get("")
@operation(query=schemas.JobListQuery, summary="Jobs, newest first (keyset cursor or offset)", tags=["jobs"],
           responses={200: schemas.JobList})
def list_jobs():
    validation.query(schemas.JobListQuery)
    f = _filters()
    limit = int_arg("limit", 50, 1, 500)
    offset = int_arg("offset", 0, 0)
    with db.read() as s:
        page = listing.list_jobs(s, f, limit=limit, cursor=request.args.get("cursor") or None, offset=offset,
                                 owner_id=scope.owner_filter())
        items = [service.to_dict(j, include_config=False) for j in page.jobs]
    return jsonify({"jobs": items, "total": page.total, "count_is_estimate": page.count_is_estimate,
                    "limit": limit, "offset": offset, "next_cursor": page.next_cursor,
                    "prev_cursor": page.prev_cursor})


@api.get("/<job_id>")
@operation(summary="One job", tags=["jobs"], responses={200: schemas.JobAnswer})
def get_job(job_id):
    with db.session() as s:
        return jsonify({"job": service.to_dict(service.get_job(s, job_id))})


@api.post("/<job_id>/cancel")
@operation(summary="Cancel a job", tags=["jobs"], responses={200: schemas.JobAnswer})
def cancel_job(job_id):
    job = service.cancel(job_id, source="api")
    with db.session() as s:
        return jsonify({"job": service.to_dict(service.get_job(s, job.id))})


@api.delete("/<job_id>")
@operation(summary="Delete a finished job", tags=["jobs"], responses={204: None})
def delete_job(job_id):
    service.delete(job_id)
    return "", 204


@api.get("/<job_id>/logs")
@operation(query=schemas.LogQuery, summary="The log from a byte offset, and the next offset", tags=["jobs"],
           responses={200: schemas.LogChunk})
def job_logs(job_id):
    validation.query(schemas.LogQuery)
    return jsonify(logread.read_log(job_id, int_arg("offset", 0, 0)))


@api.get("/<job_id>/events")
@operation(query=schemas.EventsQuery, summary="The job's state changes", tags=["jobs"], responses={200: schemas.JobEvents})
def job_events(job_id):
    validation.query(schemas.EventsQuery)
    after = int_arg("after", 0, 0)
    limit = int_arg("limit", 1000, 1, 5000)
    with db.read() as s:
        service.get_job(s, job_id)
        events, next_after = listing.list_events(s, job_id, after=after, limit=limit)
        return jsonify({"events": [service.event_to_dict(e) for e in events], "next_after": next_after})


# ---- pages -----------------------------------------------------------------------------

@pages.get("/")
@pages.get("/jobs")
def job_list():
    f = _filters()
    cursor = request.args.get("cursor") or None
    offset = (int_arg("page", 1, 1) - 1) * PAGE_SIZE  # old ?page= links still work
    with db.read() as s:
        page = listing.list_jobs(s, f, limit=PAGE_SIZE, cursor=cursor, offset=0 if cursor else offset,
                                 owner_id=scope.owner_filter())
        return render("jobs/list.html", block="job_table", jobs=page.jobs, page=page,
                      count_label=listing.count_label(page.total, page.count_is_estimate),
                      first_page=not cursor and not offset, filters=f, nav="jobs",
                      newest_id=service.newest_job_id(s), self_url=request.full_path.rstrip("?"),
                      # the filter form is outside the table block the list's refresh renders:
                      # no provider adapters built for it (a third of a refresh's CPU)
                      providers=() if is_fragment_request() else registry.display_order(),
                      statuses=states.STATUSES)


@pages.get("/jobs/changes")
def job_list_changes():
    """Polled by the first page of the list: 204 while nothing was added, else an
    ``HX-Trigger: jobs-changed`` that makes the table re-render itself once."""
    since = request.args.get("since") or ""
    with db.session() as s:
        newest = service.newest_job_id(s)
    if (newest or "") == since:
        return "", 204
    return "", 200, {"HX-Trigger": "jobs-changed"}


def poll_etag(kind: str, job_id: str, updated_at, status: str) -> str:
    """The ETag of a polled fragment of one job (``kind``: panel | row); templates put it in
    ``data-etag`` so the first poll is already conditional."""
    return conditional.etag_for(kind, job_id, updated_at, status, ticking=not states.is_terminal(status))


def _unchanged(s, kind: str, job_id: str) -> tuple[str, object]:
    """``(etag, 304 response or None)`` for a poll of ``kind`` (one primary-key read)."""
    v = listing.job_version(s, job_id)
    etag = poll_etag(kind, job_id, v.updated_at, v.status)
    return etag, conditional.not_modified(etag)


@pages.get("/jobs/<job_id>/row")
def job_row(job_id):
    with db.session() as s:
        etag, unchanged = _unchanged(s, "row", job_id)
        if unchanged is not None:
            return unchanged
        job = service.get_job(s, job_id)
        return conditional.tag(render("jobs/_row.html", job=job), etag)


@pages.get("/jobs/<job_id>")
def job_page(job_id):
    fragment = is_fragment_request()  # the status panel's poll (or a cancel's answer)
    with db.session() as s:
        etag, unchanged = _unchanged(s, "panel", job_id)
        if fragment and unchanged is not None:
            return unchanged
        job = service.get_job(s, job_id)
        events = listing.recent_events(s, job_id)
        log, log_start = None, 0
        if not fragment:  # the panel shows no log
            log_start = max(0, job.log_size - LOG_PAGE_TAIL)
            log = logread.read_log(job_id, log_start)
            if log_start:  # start on a whole line
                log["text"] = log["text"][log["text"].find("\n") + 1:]
        resp = render("jobs/detail.html", block="status_panel", job=job, events=events, log=log,
                      log_start=log_start, losses=loss_points.series(s.connection(), job_id), nav="jobs")
        return conditional.tag(resp, etag) if fragment else resp


@pages.get("/jobs/<job_id>/log")
def job_log_tail(job_id):
    """The log poller replaces itself with the new text followed by a new poller; while the
    job runs and no byte was added since ``offset``: 204 (nothing swapped, the poller slows)."""
    offset = int_arg("offset", 0, 0)
    log = logread.read_log(job_id, offset)
    if log["next_offset"] == offset and not log["complete"] and offset >= log["size"]:
        return "", 204
    with db.read() as s:
        job = service.get_job(s, job_id)
        return render("jobs/_log_tail.html", job=job, log=log)


@pages.post("/jobs/<job_id>/cancel")
def cancel_page(job_id):
    service.cancel(job_id, source="ui")
    if is_fragment_request():
        return job_page(job_id)
    return redirect(url_for("jobs_pages.job_page", job_id=job_id))


@pages.post("/jobs/<job_id>/delete")
def delete_page(job_id):
    service.delete(job_id)
    if is_fragment_request():
        resp = redirect(url_for("jobs_pages.job_list"))
        resp.headers["HX-Redirect"] = url_for("jobs_pages.job_list")
        return resp
    return redirect(url_for("jobs_pages.job_list"))


def init_app(app):
    app.jinja_env.globals.update(is_terminal=states.is_terminal, STATUSES=states.STATUSES,
                                 percent=progress_mod.percent, job_metrics=metrics.compute)
    app.jinja_env.globals["poll_etag"] = poll_etag
    app.jinja_env.globals["provider_state"] = provider_state.of
    app.register_blueprint(api)
    app.register_blueprint(pages)
    # the spend enforcer's per-limit boundary jobs (daily/weekly/monthly rollovers)
    hooks = app.extensions.setdefault("stcloud.schedule_hooks", [])
    if enforce.schedule_hook not in hooks:
        hooks.append(enforce.schedule_hook)
