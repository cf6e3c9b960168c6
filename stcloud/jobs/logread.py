"""Reading a job's log from a byte offset, at any length of log (issue 16).

Two compiled statements (``db.Prepared``) on the session's cursor: the job's status, size and
owner; then the chunk holding byte ``offset`` and the chunks up to ``offset + limit`` — two
ranges of the ``(job_id, offset)`` index in one statement, never a walk from the start of a
long log. The chunks are joined once (``b"".join``), not appended one by one.

The one log reader: the API's ``GET /api/cloud/jobs/<id>/logs``, the job page and its log
tail, the CLI through the API.
"""
from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from stcloud import db, states
from stcloud.accounts import scope
from stcloud.errors import BadRequest, NotFound
from stcloud.models import Job, JobLogChunk

MAX_LOG_READ = 1024 * 1024  # bytes returned by one logs call

_JOB = db.Prepared(select(Job.status, Job.log_size, Job.owner_id).where(Job.id == bindparam("job_id")))
# a bare max() inside the subquery: SQLite answers it with one index probe (coalesce around
# the max would make it walk every chunk before the offset)
_first_chunk = func.coalesce(
    select(func.max(JobLogChunk.offset))
    .where(JobLogChunk.job_id == bindparam("job_id"), JobLogChunk.offset <= bindparam("offset"))
    .scalar_subquery(), 0)
_CHUNKS = db.Prepared(
    select(JobLogChunk.offset, JobLogChunk.data)
    .where(JobLogChunk.job_id == bindparam("job_id"), JobLogChunk.offset >= _first_chunk,
           JobLogChunk.offset < bindparam("end"))
    .order_by(JobLogChunk.offset))


def read_log(s: Session, job_id: str, offset: int = 0, limit: int = MAX_LOG_READ) -> dict:
    """Log text from byte ``offset``: ``{text, next_offset, complete, size}``. Raises NotFound
    (also for a member asking for another member's job), BadRequest for a negative offset."""
    found = _JOB.rows(s, {"job_id": job_id})
    if not found or not scope.may_see(found[0][2]):  # members: others' jobs do not exist
        raise NotFound(f"job {job_id} not found")
    status, size, _owner = found[0]
    if offset < 0:
        raise BadRequest("offset must be >= 0")
    offset = min(offset, size)
    chunks = _CHUNKS.rows(s, {"job_id": job_id, "offset": offset, "end": offset + limit})
    parts = [data for _, data in chunks]
    if chunks and chunks[0][0] < offset:  # only the first chunk can start before the offset
        parts[0] = parts[0][offset - chunks[0][0]:]
    buf = b"".join(parts)
    if len(buf) > limit:
        cut = limit
        while cut > 0 and (buf[cut] & 0xC0) == 0x80:  # do not split a UTF-8 sequence
            cut -= 1
        buf = buf[:cut]
    next_offset = offset + len(buf)
    return {"text": buf.decode("utf-8", "replace"), "next_offset": next_offset,
            "complete": states.is_terminal(status) and next_offset >= size, "size": size}
