"""Who owns a config snapshot, and which snapshots the caller may see.

A snapshot commit names its owner in an ``Owner-Id`` trailer (written at submit from the
job's ``owner_id``). Snapshots committed before owners were recorded have none: their owner is
their job's owner (``Job-Id``), read from the database once for all of them. Members see only
their own snapshots (others' answer 404, like their jobs); admins, viewers and background
code see every one (``scope.owner_filter``).
"""
from __future__ import annotations

from sqlalchemy import select

from stcloud import db
from stcloud.accounts import scope
from stcloud.models import Job
from stcloud.snapshots.git import Commit
from stcloud.snapshots.service import Visible

_BATCH = 500


def _job_owners(job_ids: set[str]) -> dict[str, str | None]:
    ids = sorted(job_ids)
    out: dict[str, str | None] = {}
    with db.session() as s:
        for i in range(0, len(ids), _BATCH):
            out.update((row[0], row[1]) for row in s.execute(
                select(Job.id, Job.owner_id).where(Job.id.in_(ids[i:i + _BATCH]))))
    return out


def owners_of(commits: list[Commit]) -> dict[str, str | None]:
    """``{sha: owner user id or None}``: the trailer, else the job's owner."""
    missing = {c.job_id for c in commits if c.owner_id is None and c.job_id}
    by_job = _job_owners(missing) if missing else {}
    return {c.sha: c.owner_id if c.owner_id is not None else by_job.get(c.job_id or "") for c in commits}


def commit_filter() -> Visible:
    """The caller's view of the snapshots: None (everything) or a member's own."""
    wanted = scope.owner_filter()
    if wanted is None:
        return None

    def own(commits: list[Commit]) -> list[Commit]:
        owners = owners_of(commits)
        return [c for c in commits if owners[c.sha] == wanted]

    return own
