"""The job list at scale: filters, keyset (cursor) pages, name search, counts that do not scan.

Order: newest first, ``(created_at DESC, id DESC)``; every filter has a composite index in
that order (migration 0007), so a page is an index walk that stops after ``limit`` rows.

- Cursor: opaque (base64url of JSON) ``{"k": [created_at, id], "d": "next" | "prev"}``: the
  boundary row and the direction. ``next`` = older than the boundary, ``prev`` = newer.
  ``offset`` still works (compatibility) and picks the page's ids from the covering index
  before loading the rows.
- Name search (substring, case-insensitive). SQLite with FTS5: a trigram index
  (``jobs_fts``, rowid = ``job_search.id``). A term with few matches lists the matches from
  the FTS index; a term matching many jobs walks the list's index and tests each name
  (``LIKE``), which finds a page of matches after a short walk. Terms shorter than three
  characters, and SQLite builds without FTS5, use ``LIKE``. PostgreSQL: ``ILIKE`` served by
  the ``pg_trgm`` GIN index.
- Counts: exact up to ``COUNT_EXACT_MAX`` (a bounded count); beyond, a cached count per
  filter (``COUNT_TTL_SECONDS``), reported with ``count_is_estimate = True``.
"""
from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, literal_column, select, text, tuple_
from sqlalchemy.orm import Session, defer

from stcloud.accounts import scope
from stcloud.errors import BadRequest, NotFound
from stcloud.models import Job, JobEvent

COUNT_EXACT_MAX = 1000  # counted exactly at most this many rows per request
COUNT_TTL_SECONDS = 30.0  # larger counts are cached this long per filter
COUNT_CACHE_MAX = 512  # filters remembered per process
FTS_SPARSE_MAX = 2000  # a term with at most this many FTS matches is listed from the FTS index
FTS_MIN_TERM = 3  # the trigram tokenizer cannot match shorter terms


@dataclass(frozen=True)
class Filters:
    status: tuple[str, ...] = ()
    provider: str | None = None
    q: str | None = None


@dataclass
class Page:
    jobs: list[Job]
    total: int
    count_is_estimate: bool
    next_cursor: str | None = None  # older jobs
    prev_cursor: str | None = None  # newer jobs
    search: str | None = None  # how the name search ran: fts | like | trgm (diagnostics)


# ---- cursors ----------------------------------------------------------------------------

def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def encode_cursor(job: Job, direction: str) -> str:
    raw = json.dumps({"k": [_iso(job.created_at), job.id], "d": direction}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    """``(created_at, id, direction)``. Raises BadRequest for anything not made by us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        created, job_id = data["k"]
        direction = data["d"]
        at = datetime.fromisoformat(created)
        if (direction not in ("next", "prev") or not isinstance(job_id, str) or not job_id
                or at.tzinfo is None):
            raise ValueError(direction)
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise BadRequest("cursor is not valid; use next_cursor/prev_cursor from a previous answer",
                         extra={"parameter": "cursor"}) from None
    return at, job_id, direction


# ---- search -----------------------------------------------------------------------------

_fts_present: dict[str, bool] = {}


def _has_fts(s: Session) -> bool:
    bind = s.get_bind()
    key = str(bind.engine.url)
    if key not in _fts_present:
        _fts_present[key] = bind.dialect.name == "sqlite" and s.scalar(text(
            "SELECT count(*) FROM sqlite_master WHERE name = 'jobs_fts'")) == 1
    return _fts_present[key]


def _like_pattern(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _fts_phrase(q: str) -> str:
    return '"' + q.replace('"', '""') + '"'


def _fts_ids(q: str):
    """job ids whose name contains ``q`` (FTS5 trigram), as a subquery."""
    return text(
        "SELECT job_id FROM job_search WHERE id IN "
        "(SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH :fts_q)"
    ).bindparams(fts_q=_fts_phrase(q)).columns(literal_column("job_id"))


def _search_plan(s: Session, q: str) -> str:
    """fts (few matches: list them from the FTS index), like (walk the list index) or trgm."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        return "trgm"
    if len(q) < FTS_MIN_TERM or not _has_fts(s):
        return "like"
    n = s.scalar(text("SELECT count(*) FROM (SELECT 1 FROM jobs_fts WHERE jobs_fts MATCH :fts_q LIMIT :cap)"),
                 {"fts_q": _fts_phrase(q), "cap": FTS_SPARSE_MAX + 1})
    return "fts" if n <= FTS_SPARSE_MAX else "like"


# ---- queries ----------------------------------------------------------------------------

# what a list row never shows: left unloaded (read on access inside the session if ever)
_LIST_OPTIONS = (defer(Job.config), defer(Job.dataloader_config), defer(Job.data_summary))


def _where(stmt, f: Filters, owner_id: str | None, plan: str | None):
    if f.status:
        stmt = stmt.where(Job.status == f.status[0]) if len(f.status) == 1 else stmt.where(Job.status.in_(f.status))
    if f.provider:
        stmt = stmt.where(Job.provider == f.provider)
    if owner_id is not None:
        stmt = stmt.where(Job.owner_id == owner_id)
    if f.q:
        if plan == "fts":
            stmt = stmt.where(Job.id.in_(_fts_ids(f.q)))
        elif plan == "trgm":
            # the pattern is inlined (escaped by the driver's literal rendering): a prepared
            # statement's generic plan cannot see how selective it is and walks the whole
            # created_at index for a rare name instead of using the trigram index
            stmt = stmt.where(Job.name.ilike(bindparam(None, _like_pattern(f.q), literal_execute=True), escape="\\"))
        else:
            stmt = stmt.where(Job.name.ilike(_like_pattern(f.q), escape="\\"))
    return stmt


def list_jobs(s: Session, filters: Filters, *, limit: int = 50, cursor: str | None = None,
              offset: int = 0, owner_id: str | None = None) -> Page:
    """One page of jobs, newest first, plus the count. ``owner_id`` restricts to one owner.

    Raises BadRequest for a bad cursor, or a cursor together with an offset.
    """
    if cursor and offset:
        raise BadRequest("give cursor or offset, not both", extra={"parameter": "cursor"})
    plan = _search_plan(s, filters.q) if filters.q else None
    order_desc = (Job.created_at.desc(), Job.id.desc())
    if cursor:
        at, job_id, direction = decode_cursor(cursor)
        key = tuple_(Job.created_at, Job.id)
        boundary = tuple_(_bound_created_at(at), job_id)
        stmt = _where(select(Job).options(*_LIST_OPTIONS), filters, owner_id, plan)
        if direction == "next":
            stmt = stmt.where(key < boundary).order_by(*order_desc)
        else:
            stmt = stmt.where(key > boundary).order_by(Job.created_at.asc(), Job.id.asc())
        rows = list(s.scalars(stmt.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        if direction == "prev":
            rows.reverse()
        has_older = more if direction == "next" else True
        has_newer = True if direction == "next" else more
    else:
        if offset:
            # the page's ids come from the covering index; only those rows are read
            ids = _where(select(Job.id), filters, owner_id, plan).order_by(*order_desc)
            id_rows = list(s.scalars(ids.limit(limit + 1).offset(offset)))
            by_id = {j.id: j for j in s.scalars(select(Job).options(*_LIST_OPTIONS)
                                                .where(Job.id.in_(id_rows[:limit])))}
            rows = [by_id[i] for i in id_rows[:limit] if i in by_id]
            more = len(id_rows) > limit
        else:
            rows = list(s.scalars(_where(select(Job).options(*_LIST_OPTIONS), filters, owner_id, plan)
                                  .order_by(*order_desc).limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
        has_older, has_newer = more, offset > 0
    total, estimated = count_jobs(s, filters, owner_id=owner_id, plan=plan)
    return Page(
        jobs=rows, total=total, count_is_estimate=estimated,
        next_cursor=encode_cursor(rows[-1], "next") if rows and has_older else None,
        prev_cursor=encode_cursor(rows[0], "prev") if rows and has_newer else None,
        search=plan,
    )


def _bound_created_at(at: datetime):
    """created_at bound in the column's own type (SQLite compares the same text form)."""
    return bindparam(None, at, type_=Job.__table__.c.created_at.type)


def count_label(total: int, estimate: bool) -> str:
    """"1 job", "1,234 jobs", "about 70,000 jobs" (estimates rounded to two figures)."""
    if estimate:
        shown = round(total, -max(0, len(str(total)) - 2))
        return f"about {shown:,} jobs"
    return f"{total:,} job{'' if total == 1 else 's'}"


# ---- counts -----------------------------------------------------------------------------

_count_cache: dict[tuple, tuple[float, int]] = {}
_count_lock = threading.Lock()


def _clock() -> float:
    return time.monotonic()


def _fresh(key: tuple) -> int | None:
    """The cached count for ``key`` while it is younger than COUNT_TTL_SECONDS."""
    with _count_lock:
        hit = _count_cache.get(key)
    return hit[1] if hit is not None and _clock() - hit[0] < COUNT_TTL_SECONDS else None


def _cached(key: tuple, compute) -> int:
    if (hit := _fresh(key)) is not None:
        return hit
    now = _clock()
    n = int(compute())
    with _count_lock:
        if len(_count_cache) >= COUNT_CACHE_MAX:
            _count_cache.pop(next(iter(_count_cache)))
        _count_cache[key] = (now, n)
    return n


def count_jobs(s: Session, filters: Filters, *, owner_id: str | None = None,
               plan: str | None = None) -> tuple[int, bool]:
    """``(count, is_estimate)``.

    Exact when at most COUNT_EXACT_MAX jobs match (a bounded count). Beyond, an estimate:
    the filter's count cached for COUNT_TTL_SECONDS; for a name term matching many jobs
    (plan ``like``), the term's FTS match count scaled by the share of jobs the other
    filters keep (or, without FTS, the share of matches among the newest SAMPLE jobs) — the
    term is never tested against every row.
    """
    if filters.q and plan is None:
        plan = _search_plan(s, filters.q)
    url = str(s.get_bind().engine.url)
    if plan == "like":
        return _estimate_like(s, filters, owner_id, url), True
    if (hit := _fresh((url, filters, owner_id))) is not None and hit > COUNT_EXACT_MAX:
        return hit, True  # a large count cached a moment ago: not even the bounded walk
    base = _where(select(literal_column("1")).select_from(Job), filters, owner_id, plan)
    # ordered like the list, so both databases walk the same composite index (PostgreSQL's
    # generic plan for a prepared count would otherwise scan the table for a rare status)
    first = base.order_by(Job.created_at.desc(), Job.id.desc()).limit(COUNT_EXACT_MAX + 1)
    bounded = s.scalar(select(func.count()).select_from(first.subquery()))
    if bounded <= COUNT_EXACT_MAX:
        return int(bounded), False
    return _cached((url, filters, owner_id),
                   lambda: s.scalar(select(func.count()).select_from(base.subquery()))), True


SAMPLE = 10_000  # newest jobs looked at to estimate a short term's share


def _estimate_like(s: Session, filters: Filters, owner_id: str | None, url: str) -> int:
    unsearched = Filters(status=filters.status, provider=filters.provider)
    base_n, _ = count_jobs(s, unsearched, owner_id=owner_id)
    if _has_fts(s) and len(filters.q) >= FTS_MIN_TERM:
        matches = _cached((url, "fts", filters.q), lambda: s.scalar(text(
            "SELECT count(*) FROM jobs_fts WHERE jobs_fts MATCH :fts_q"), {"fts_q": _fts_phrase(filters.q)}))
        all_n, _ = count_jobs(s, Filters())
        return round(matches * base_n / all_n) if all_n else 0
    newest = _where(select(Job.name), unsearched, owner_id, None).order_by(
        Job.created_at.desc(), Job.id.desc()).limit(SAMPLE).subquery()
    hits = s.scalar(select(func.count()).select_from(newest).where(
        newest.c.name.ilike(_like_pattern(filters.q), escape="\\")))
    seen = min(base_n, SAMPLE)
    return round(hits * base_n / seen) if seen else 0


# ---- polls ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Version:
    """What a polled fragment of one job depends on: every change to the job row moves
    ``updated_at`` (the ORM's onupdate, and the streaming path sets it)."""
    updated_at: datetime
    status: str


# Built once: every poll of a row or a panel runs it (statement construction was a third of a 304).
_VERSION = select(Job.updated_at, Job.status, Job.owner_id).where(Job.id == bindparam("job_id"))


def job_version(s: Session, job_id: str) -> Version:
    """One primary-key read of the job's version. Raises NotFound (also for a member
    asking for another member's job)."""
    row = s.execute(_VERSION, {"job_id": job_id}).first()
    if row is None or not scope.may_see(row.owner_id):
        raise NotFound(f"job {job_id} not found")
    return Version(row.updated_at, row.status)


# ---- events -----------------------------------------------------------------------------

def list_events(s: Session, job_id: str, *, after: int = 0, limit: int = 1000) -> tuple[list[JobEvent], int | None]:
    """Events of one job in order, from the (job_id, id) index: ``(events, next_after)``;
    ``next_after`` is None on the last page."""
    rows = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
                          .order_by(JobEvent.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


def recent_events(s: Session, job_id: str, limit: int = 100) -> list[JobEvent]:
    """The newest ``limit`` events of one job, oldest first (the job page's timeline)."""
    rows = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                          .order_by(JobEvent.id.desc()).limit(limit)))
    rows.reverse()
    return rows
