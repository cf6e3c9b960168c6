"""Waiting jobs, their release, pipelines. Routes and the scheduler call these.

A body with ``depends_on``, ``hold`` or ``provider: "auto"`` becomes a ``waiting`` job (no
reservation, no cost) with a ``job_dependencies`` row holding the body. ``release`` runs
that body through the ordinary submit path under the same job id, once every dependency has
ended (``on: completed`` needs each to be completed, else the job is cancelled with the
reason; ``on: any`` starts anyway) and the placement/budget allows it. ``tick`` (scheduler,
every few seconds) releases what is due; a job with nothing to wait for is released at once
inside the submit request, so its errors are the submit's errors.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from stcloud import db, states
from stcloud.accounts import scope
from stcloud.errors import NotFound, StcloudError, ValidationError
from stcloud.jobs import job_secrets
from stcloud.jobs import service as jobs_service
from stcloud.jobs import submit as submit_mod
from stcloud.jobs.request import parse_body
from stcloud.models import Job, JobDependency, JobEvent, Pipeline, User, new_id, utcnow
from stcloud.pipelines import placement, resume_input, spec
from stcloud.providers import registry
from stcloud.publishing import service as publishing
from stcloud.storage import service as storage_service

log = logging.getLogger(__name__)

SOURCE = "pipeline"
OWN_KEYS = (*spec.DEP_KEYS, "hold", "placement")
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
INPUT_MARK = "stcloud_input"  # read by the worker agent (workers/agent.py _fetch_inputs)


def wants_waiting(body: dict) -> bool:
    return body.get("provider") == placement.AUTO or any(body.get(k) not in (None, [], {}, False) for k in OWN_KEYS)


# ---- creating waiting jobs --------------------------------------------------------------------

def _visible_jobs(s, ids: list[str]) -> dict[str, Job]:
    found = {}
    for job_id in ids:
        job = s.get(Job, job_id)
        if job is None or not scope.may_see(job.owner_id):
            raise ValidationError(f"depends_on: job {job_id} not found", extra={"field": "depends_on",
                                                                                "unknown": job_id})
        found[job_id] = job
    return found


def _checked_body(body: dict, provider: str) -> dict:
    """The body to run (our keys removed) after the submit's own validation (400 naming the
    field): for ``auto``, checked against a provider it may get."""
    run = {k: v for k, v in body.items() if k not in OWN_KEYS}
    pools = registry.names_where(lambda svc: bool(svc.worker_pool))  # accepts any hardware name
    check_as = provider if provider != placement.AUTO else (pools[0] if pools else None)
    if check_as:
        req = parse_body({**run, "provider": check_as})
        run["config"], run["dataloader_config"] = req.config, req.dataloader_config
    return run


def _add_waiting(s, run_body: dict, *, policy_body: dict, deps: list[str], on: str, inputs: dict,
                 hold: bool, reason: str, pipeline_id: str | None = None, step: str | None = None,
                 source: str = "api") -> Job:
    name = str(run_body.get("name") or (run_body.get("config") or {}).get("tracker_run_name")
               or step or f"{run_body.get('provider')}-{utcnow().strftime('%Y%m%d-%H%M%S')}")[:200]
    job_id = new_id("job")
    # secrets (hub tokens, S3 keys...) go to the encrypted store, as for every job row; the
    # stored body keeps the redacted values too, and the release puts them back
    config = job_secrets.seal(job_id, run_body.get("config") or {})
    dataloader = job_secrets.seal(job_id, run_body.get("dataloader_config") or [], "dataloader")
    run_body = {**run_body, "config": config, "dataloader_config": dataloader}
    job = Job(id=job_id, name=name, provider=str(run_body.get("provider"))[:32], status=states.WAITING,
              config=config, dataloader_config=dataloader,
              hardware=run_body.get("hardware"), config_name=run_body.get("config_name") or name,
              progress={"stage": "waiting"})
    s.add(job)
    s.flush()
    s.add(JobEvent(job_id=job.id, at=utcnow(), source=source, from_status=None, to_status=states.WAITING,
                   accepted=True, detail=reason[:500]))
    stored = dict(run_body)
    if "placement" in policy_body:
        stored["placement"] = policy_body["placement"]
    s.add(JobDependency(job_id=job.id, pipeline_id=pipeline_id, step=step, depends_on=list(deps), on=on,
                        inputs=dict(inputs), body=stored, hold=hold, reason=reason))
    return job


def _wait_reason(deps: list[str], held: placement.Decision | None) -> str:
    if deps:
        return f"waiting for {', '.join(deps)}"
    if held is not None:
        return held.reason
    return "waiting to be placed"


def submit_waiting(body: dict, source: str):
    """The submit hook (``jobs.waiting.intercept``): None for an ordinary body; else the
    waiting job (201), or — nothing to wait for — the released job's submit result."""
    if not wants_waiting(body):
        return None
    deps, on, inputs = spec.dependency_fields(body)
    policy = placement.parse_policy(body)
    provider = body.get("provider")
    run = _checked_body(body, provider) if provider else body
    if not provider:
        parse_body(body)  # the submit's own "provider is required"
    with db.session() as s:
        _visible_jobs(s, deps)
    held = None
    if not deps and provider != placement.AUTO and policy.hold:
        held = placement.budget_hold(provider, run)
    with db.transaction() as s:
        job = _add_waiting(s, run, policy_body=body, deps=deps, on=on, inputs=inputs, hold=policy.hold,
                           reason=_wait_reason(deps, held), source=source)
        if held is not None:
            job.placement = held.to_dict()
        job_id = job.id
    if held is not None:
        return _result(job_id)
    # dependencies that already ended (or none): start now, with the submit's own errors
    return release(job_id, strict=True) or _result(job_id)


def _result(job_id: str):
    with db.session() as s:
        job = jobs_service.to_dict(jobs_service.get_job(s, job_id))
    return submit_mod.SubmitResult(job, False, [], 201)


# ---- release ----------------------------------------------------------------------------------

def _record(s, job: Job, detail: str) -> None:
    s.add(JobEvent(job_id=job.id, at=utcnow(), source=SOURCE, from_status=job.status, to_status=job.status,
                   accepted=True, detail=detail[:500]))


def _owner_actor(owner_id: str | None) -> scope.Actor | None:
    if owner_id is None:
        return None
    with db.session() as s:
        user = s.get(User, owner_id)
        return scope.Actor(name=user.username if user else "pipeline",
                           role=user.role if user else scope.MEMBER, user_id=owner_id)


def _parents_state(s, dep: JobDependency) -> tuple[bool, str | None]:
    """(all dependencies ended, why the job must not run — on: completed with a failed one)."""
    for parent_id in dep.depends_on or []:
        parent = s.get(Job, parent_id)
        if parent is None:
            return True, f"dependency {parent_id} was deleted"
        if not states.is_terminal(parent.status):
            return False, None
    if dep.on == "completed":
        for parent_id in dep.depends_on or []:
            parent = s.get(Job, parent_id)
            if parent.status != states.COMPLETED:
                return True, f"dependency {parent.name} ({parent.id}) {parent.status}"
    return True, None


def _resolve_inputs(job_id: str, inputs: dict, provider: str) -> dict:
    """Config values for ``inputs``: the parent's final LoRA weights. For self-hosted workers
    the file is copied into this job's own storage prefix (its credentials cover only that);
    for others the output's URL is passed. Raises ValidationError."""
    out = {}
    for name, parent_id in (inputs or {}).items():
        with db.session() as s:
            parent = s.get(Job, parent_id)
            outputs = list(parent.outputs or []) if parent else []
        # a worker's outputs are listed into the row just after it reports its end: read the store
        outputs += storage_service.outputs_for_job(parent_id)
        weights = next((o for o in outputs if isinstance(o, dict)
                        and str(o.get("name") or o.get("key") or "").rsplit("/", 1)[-1] == WEIGHTS_NAME), None)
        if weights is None:
            raise ValidationError(f"inputs.{name}: job {parent_id} has no {WEIGHTS_NAME} among its outputs")
        if registry.get(provider).worker_pool and weights.get("bucket") and weights.get("key"):
            rel = f"inputs/{name}.safetensors"
            storage_service.backend().copy(weights["bucket"], weights["key"], storage_service.JOB_BUCKET,
                                           f"{job_id}/{rel}", meta=None)
            out[name] = {INPUT_MARK: rel}
        elif weights.get("url"):
            out[name] = weights["url"]
        else:
            raise ValidationError(f"inputs.{name}: the weights of {parent_id} cannot be passed to {provider}")
    return out


def _fail(job_id: str, message: str) -> None:
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is not None and job.status in (states.WAITING, states.PENDING):
            if jobs_service.transition(s, job, states.FAILED, source=SOURCE, detail=message[:500]):
                job.error = message


def _discard(job_id: str) -> None:
    """A released-at-once job whose submit was refused: nothing stays (as a plain submit)."""
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != states.WAITING:
            return  # the submit took the row: it ended failed with the reason
        dep = s.get(JobDependency, job_id)
        if dep is not None:
            s.delete(dep)
            s.flush()
        s.delete(job)
    publishing.discard_for_submit(job_id)


def release(job_id: str, *, strict: bool = False):
    """Start ``job_id`` if it may start now; returns the SubmitResult, or None while it waits
    (or when it was cancelled). ``strict`` (inside the submit request): errors are raised
    and the row removed, as for a plain submit; otherwise the job fails with the reason."""
    with db.transaction() as s:
        job, dep = s.get(Job, job_id), s.get(JobDependency, job_id)
        if job is None or dep is None or job.status != states.WAITING or dep.released_at is not None:
            return None
        ended, refusal = _parents_state(s, dep)
        if not ended:
            return None
        if refusal:
            jobs_service.transition(s, job, states.CANCELLED, source=SOURCE, detail=f"not started: {refusal}")
            job.error = f"not started: {refusal}"
            return None
        body, inputs, owner, hold = dict(dep.body), dict(dep.inputs or {}), job.owner_id, dep.hold
    body["config"] = job_secrets.unseal(job_id, body.get("config") or {})
    body["dataloader_config"] = job_secrets.unseal(job_id, body.get("dataloader_config") or [], "dataloader")
    try:
        policy = placement.parse_policy({"hold": hold, "placement": body.pop("placement", None) or {}})
        decision = None
        if body.get("provider") == placement.AUTO:
            decision = placement.decide(body, policy)
        elif hold:
            decision = placement.budget_hold(body["provider"], body)
        if decision is not None and decision.held:
            with db.transaction() as s:
                job, dep = s.get(Job, job_id), s.get(JobDependency, job_id)
                if job is not None and job.status == states.WAITING:
                    if dep.reason != decision.reason:
                        _record(s, job, decision.reason)
                    dep.reason, job.placement = decision.reason, decision.to_dict()
            return None
        if decision is not None and decision.provider:
            body["provider"] = decision.provider
            if decision.hardware and not body.get("hardware"):
                body["hardware"] = decision.hardware
        resume_parent = inputs.pop(resume_input.NAME, None)
        if inputs:
            body["config"] = {**(body.get("config") or {}), **_resolve_inputs(job_id, inputs, body["provider"])}
        if resume_parent:
            body = resume_input.apply(body, resume_parent)
        with db.transaction() as s:
            job, dep = s.get(Job, job_id), s.get(JobDependency, job_id)
            if job is None or job.status != states.WAITING or dep.released_at is not None:
                return None
            dep.released_at = utcnow()
            if decision is not None:
                job.placement = decision.to_dict()
                _record(s, job, f"placement: {decision.provider} — {decision.reason}")
        if strict:
            return submit_mod.submit(body, source=SOURCE, job_id=job_id)
        with scope.acting_as(_owner_actor(owner)):
            return submit_mod.submit(body, source=SOURCE, job_id=job_id)
    except Exception as exc:  # noqa: BLE001 - a release that cannot happen ends the job with the reason
        if strict:
            _discard(job_id)
            raise
        if isinstance(exc, StcloudError):
            log.info("job %s could not start: %s", job_id, exc.detail)
            message = exc.detail
        else:
            log.exception("job %s could not start", job_id)
            message = f"{type(exc).__name__}: {exc}"
        _fail(job_id, f"could not start: {message}")
        return None


def tick() -> int:
    """Scheduler: release every waiting job that may start. Returns how many started."""
    with db.session() as s:
        ids = list(s.scalars(select(Job.id).join(JobDependency, JobDependency.job_id == Job.id)
                             .where(Job.status == states.WAITING).order_by(Job.created_at)))
    started = 0
    for job_id in ids:
        try:
            if release(job_id) is not None:
                started += 1
        except Exception:  # noqa: BLE001 - one job's fault must not stop the others
            log.exception("releasing job %s failed", job_id)
    return started


# ---- pipelines --------------------------------------------------------------------------------

def submit_pipeline(raw, *, source: str = "api") -> dict:
    """Create a pipeline: every step a waiting job, in one transaction, then release the
    steps with nothing to wait for. Raises BadRequest / ValidationError (422: unknown
    dependency, cycle) with nothing written."""
    doc = spec.load(raw)
    name, steps = spec.parse(doc)
    names = {st.name for st in steps}
    runs = {}
    with db.session() as s:
        for st in steps:
            external = [d for d in st.depends_on if d not in names]
            _visible_jobs(s, external)
    for st in steps:
        provider = st.body.get("provider")
        if not provider:
            parse_body(st.body)  # "provider is required"
        runs[st.name] = _checked_body(st.body, provider)
        placement.parse_policy(st.body)
    with db.transaction() as s:
        pipe = Pipeline(id=new_id("pip"), name=name, document=doc, created_at=utcnow())
        if (uid := scope.current_user_id()) is not None:
            pipe.owner_id = uid
        s.add(pipe)
        ids: dict[str, str] = {}
        for st in steps:
            deps = [ids.get(d, d) for d in st.depends_on]
            inputs = {k: ids.get(v, v) for k, v in st.inputs.items()}
            job = _add_waiting(s, runs[st.name], policy_body=st.body, deps=deps, on=st.on, inputs=inputs,
                               hold=placement.parse_policy(st.body).hold, reason=_wait_reason(deps, None),
                               pipeline_id=pipe.id, step=st.name, source=source)
            ids[st.name] = job.id
        pipe_id = pipe.id
    tick_pipeline(pipe_id)
    return get_pipeline(pipe_id)


def tick_pipeline(pipeline_id: str) -> None:
    with db.session() as s:
        ids = list(s.scalars(select(JobDependency.job_id).where(JobDependency.pipeline_id == pipeline_id)))
    for job_id in ids:
        try:
            release(job_id)
        except Exception:  # noqa: BLE001
            log.exception("releasing job %s failed", job_id)


def _pipeline(s, pipeline_id: str) -> Pipeline:
    pipe = s.get(Pipeline, pipeline_id)
    if pipe is None or not scope.may_see(pipe.owner_id):
        raise NotFound(f"pipeline {pipeline_id} not found")
    return pipe


def get_pipeline(pipeline_id: str) -> dict:
    """``{id, name, status, created_at, steps: [{step, job_id, status, depends_on, on, ...}]}``."""
    with db.session() as s:
        pipe = _pipeline(s, pipeline_id)
        rows = s.execute(select(JobDependency, Job).join(Job, Job.id == JobDependency.job_id)
                         .where(JobDependency.pipeline_id == pipeline_id).order_by(Job.created_at, Job.id)).all()
        by_id = {job.id: dep.step for dep, job in rows}
        steps = [{"step": dep.step, "job_id": job.id, "name": job.name, "status": job.status,
                  "provider": job.provider, "depends_on": list(dep.depends_on or []),
                  "depends_on_steps": [by_id.get(d, d) for d in dep.depends_on or []], "on": dep.on,
                  "inputs": dict(dep.inputs or {}), "reason": dep.reason if job.status == states.WAITING else None,
                  "error": job.error} for dep, job in rows]
        statuses = {st["status"] for st in steps}
        if statuses and statuses <= {states.COMPLETED}:
            overall = states.COMPLETED
        elif statuses and statuses <= states.TERMINAL:
            overall = states.CANCELLED if pipe.cancelled_at else states.FAILED
        else:
            overall = "running" if statuses - {states.WAITING} - states.TERMINAL else states.WAITING
        return {"id": pipe.id, "name": pipe.name, "status": overall,
                "created_at": pipe.created_at.isoformat().replace("+00:00", "Z"),
                "cancelled_at": pipe.cancelled_at.isoformat().replace("+00:00", "Z") if pipe.cancelled_at else None,
                "steps": steps}


def list_pipelines(limit: int = 50) -> list[dict]:
    with db.session() as s:
        stmt = select(Pipeline.id).order_by(Pipeline.created_at.desc()).limit(limit)
        if (owner := scope.owner_filter()) is not None:
            stmt = stmt.where(Pipeline.owner_id == owner)
        ids = list(s.scalars(stmt))
    return [get_pipeline(i) for i in ids]


def cancel_pipeline(pipeline_id: str) -> dict:
    """Cancel every step that has not finished (waiting ones first, so none starts)."""
    with db.transaction() as s:
        pipe = _pipeline(s, pipeline_id)
        pipe.cancelled_at = pipe.cancelled_at or utcnow()
    info = get_pipeline(pipeline_id)
    order = sorted(info["steps"], key=lambda st: st["status"] != states.WAITING)
    for st in order:
        if not states.is_terminal(st["status"]):
            jobs_service.cancel(st["job_id"], source=SOURCE, reason=f"pipeline {info['name']} cancelled")
    return get_pipeline(pipeline_id)


def job_link(job_id: str) -> dict | None:
    """What the job page shows: its pipeline, dependencies, why it waits, the placement."""
    with db.session() as s:
        dep = s.get(JobDependency, job_id)
        if dep is None:
            return None
        pipe = s.get(Pipeline, dep.pipeline_id) if dep.pipeline_id else None
        return {"pipeline_id": dep.pipeline_id, "pipeline_name": pipe.name if pipe else None, "step": dep.step,
                "depends_on": list(dep.depends_on or []), "on": dep.on, "inputs": dict(dep.inputs or {}),
                "reason": dep.reason, "hold": dep.hold}
