"""Compare runs (SPEC §13 ``GET /api/cloud/jobs/compare?ids=a,b,…``): the loss series of each
job, a table of final/best loss, duration, cost, steps and learning rate, the config diff, and
each job's sample images per checkpoint step (``samples: [{step, url}]``, oldest step first;
the url is the checkpoint file route the job page's gallery uses).

Jobs are read through ``service.get_job`` so ownership holds: an unknown id or another member's
job is a 404, exactly as on every other job route."""
from __future__ import annotations

import json
from typing import Any

from stcloud import db
from stcloud.errors import BadRequest
from stcloud.jobs import checkpoints, loss_points, metrics
from stcloud.jobs import service as jobs_service
from stcloud.models import Job
from stcloud.redact import redact

MIN_JOBS, MAX_JOBS = 2, 10
MISSING = None  # a key one job has and another has not shows as null in the diff


def parse_ids(raw: list[str]) -> list[str]:
    """``ids=a,b`` and ``ids=a&ids=b`` both work; duplicates are dropped, order kept."""
    ids: list[str] = []
    for part in ",".join(raw).split(","):
        part = part.strip()
        if part and part not in ids:
            ids.append(part)
    if len(ids) < MIN_JOBS:
        raise BadRequest(f"ids: give at least {MIN_JOBS} job ids to compare (comma-separated)",
                         extra={"field": "ids"})
    if len(ids) > MAX_JOBS:
        raise BadRequest(f"ids: compare at most {MAX_JOBS} jobs at once", extra={"field": "ids"})
    return ids


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [x, y]}`` -> ``{"a.b": 1, "c[0]": x, "c[1]": y}``."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for k in sorted(value, key=str):
            out.update(flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list):
        if not value and prefix:
            out[prefix] = []
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def _flat_config(job: Job) -> dict[str, Any]:
    return flatten({"config": redact(job.config or {}), "dataloader_config": redact(job.dataloader_config or [])})


def config_diff(flat: dict[str, dict[str, Any]]) -> list[dict]:
    """The keys whose value differs between the jobs: ``[{key, values: {job_id: value|null}}]``."""
    keys = sorted(set().union(*(f.keys() for f in flat.values())))
    out = []
    for key in keys:
        values = {job_id: f.get(key, MISSING) for job_id, f in flat.items()}
        present = {job_id: key in f for job_id, f in flat.items()}
        distinct = {json.dumps(v, sort_keys=True, default=str) for v in values.values()}
        if len(distinct) > 1 or len(set(present.values())) > 1:
            out.append({"key": key, "values": values,
                        "missing": [job_id for job_id, here in present.items() if not here]})
    return out


def _learning_rate(config: dict) -> Any:
    for key in ("learning_rate", "lr"):
        if key in config:
            return config[key]
    return None


def _summary(job: Job, series: list[list]) -> dict:
    m = metrics.compute(job)
    progress = job.progress or {}
    config = job.config or {}
    return {
        "id": job.id, "name": job.name, "status": job.status, "provider": job.provider,
        "hardware": job.hardware, "cost_usd": job.cost_usd,
        "estimated_cost_usd": job.estimated_cost_usd,
        "steps": progress.get("step"), "total_steps": progress.get("total_steps") or config.get("max_train_steps"),
        "learning_rate": _learning_rate(config),
        "lr_scheduler": config.get("lr_scheduler"),
        "final_loss": m["final_loss"], "best_loss": m["best_loss"],
        "duration_seconds": m["duration_seconds"],
        "series": series,
    }


def samples_of(job_id: str) -> list[dict]:
    """``[{step, url}]``: every sample image of the job (a step with several images repeats)."""
    return [{"step": ck["step"], "url": smp["url"]}
            for ck in (checkpoints.to_dict(job_id, c) for c in checkpoints.scan(job_id))
            for smp in ck["samples"]]


def sample_grid(jobs: list[dict]) -> list[dict]:
    """The compare page's rows: ``[{step, cells: [[url, …] per job]}]``, one row per step any
    job has a sample at (oldest first); a job without one at that step gets an empty cell."""
    steps = sorted({smp["step"] for job in jobs for smp in job["samples"]})
    return [{"step": step, "cells": [[smp["url"] for smp in job["samples"] if smp["step"] == step]
                                     for job in jobs]} for step in steps]


def compare(ids: list[str], pair: list[str] | None = None) -> dict:
    """``{jobs: [summary + series + samples], diff: {jobs: [id, …], changes: [...]}}``. ``pair`` (two of
    ``ids``) narrows the diff to those two jobs; by default it spans all the jobs."""
    if pair is not None:
        pair = [p for p in pair if p]
        if len(pair) != 2 or pair[0] == pair[1] or any(p not in ids for p in pair):
            raise BadRequest("diff: name two different jobs out of ids (diff=a,b)", extra={"field": "diff"})
    with db.session() as s:
        jobs = [jobs_service.get_job(s, job_id) for job_id in ids]
        summaries = [_summary(j, loss_points.series(s.connection(), j.id)) for j in jobs]
        wanted = pair or ids
        flat = {j.id: _flat_config(j) for j in jobs if j.id in wanted}
    for summary in summaries:  # read from the store after the session: no database held
        summary["samples"] = samples_of(summary["id"])
    return {"jobs": summaries, "diff": {"jobs": list(wanted), "changes": config_diff(flat)}}
