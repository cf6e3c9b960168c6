"""Reading a job's log from a byte offset, at any length of log (issue 16).

One compiled statement (``db.Prepared``) on a direct connection (``stcloud/direct.py``, no
ORM session: a log poll near the end of a log is the hottest read, and a session cost more
than the statement): the job's status, size and owner, outer-joined to the chunk holding
byte ``offset`` and the chunks up to ``offset + limit`` — two ranges of the
``(job_id, offset)`` index, never a walk from the start of a long log. The chunks are joined
once (``b"".join``), not appended one by one. The statement is its own snapshot: the size
and the chunks agree even while the job writes.

The one log reader: the API's ``GET /api/cloud/jobs/<id>/logs``, the job page and its log
tail, the CLI through the API.
"""
from __future__ import annotations

from sqlalchemy import and_, bindparam, func, literal_column, select

from stcloud import db, direct, states
from stcloud.accounts import scope
from stcloud.errors import BadRequest, NotFound
from stcloud.models import Job, JobLogChunk

MAX_LOG_READ = 1024 * 1024  # bytes returned by one logs call

# a bare max() inside the subquery: SQLite answers it with one index probe (coalesce around
# the max would make it walk every chunk before the offset); a literal 0, so that every value
# is the caller's (db.Compiled then builds the arguments without construct_params)
_first_chunk = func.coalesce(
    select(func.max(JobLogChunk.offset))
    .where(JobLogChunk.job_id == bindparam("job_id"), JobLogChunk.offset <= bindparam("offset"))
    .scalar_subquery(), literal_column("0"))
_READ = db.Prepared(
    select(Job.status, Job.log_size, Job.owner_id, JobLogChunk.offset, JobLogChunk.data)
    .select_from(Job.__table__.outerjoin(
        JobLogChunk.__table__,
        and_(JobLogChunk.job_id == Job.id, JobLogChunk.offset >= _first_chunk,
             JobLogChunk.offset < bindparam("end"))))
    .where(Job.id == bindparam("job_id"))
    .order_by(JobLogChunk.offset))


def read_log(job_id: str, offset: int = 0, limit: int = MAX_LOG_READ) -> dict:
    """Log text from byte ``offset``: ``{text, next_offset, complete, size}``. Raises NotFound
    (also for a member asking for another member's job), BadRequest for a negative offset.
    Needs an app context (the current app's database)."""
    start = max(offset, 0)
    found = direct.rows(db.get_db().direct_read_engine, _READ,
                        {"job_id": job_id, "offset": start, "end": start + limit if offset >= 0 else 0})
    if not found or not scope.may_see(found[0][2]):  # members: others' jobs do not exist
        raise NotFound(f"job {job_id} not found")
    status, size, _owner, first_at, _data = found[0]
    if offset < 0:
        raise BadRequest("offset must be >= 0")
    offset = min(offset, size)
    parts = [row[4] for row in found] if first_at is not None else []  # None: no chunk in range
    if parts and first_at < offset:  # only the first chunk can start before the offset
        parts[0] = parts[0][offset - first_at:]
    buf = b"".join(parts)
    if len(buf) > limit:
        cut = limit
        while cut > 0 and (buf[cut] & 0xC0) == 0x80:  # do not split a UTF-8 sequence
            cut -= 1
        buf = buf[:cut]
    next_offset = offset + len(buf)
    return {"text": buf.decode("utf-8", "replace"), "next_offset": next_offset,
            "complete": states.is_terminal(status) and next_offset >= size, "size": size}
