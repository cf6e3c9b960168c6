"""The audit log: append-only records, each carrying the hash of the previous one.

``hash = sha256(canonical JSON of every field, prev_hash included)``. Editing a record
breaks its own hash; removing one breaks the next record's ``prev_hash``; removing the
newest ones is caught by the head (``settings['audit_head']``: seq and hash of the newest
record), written in the same transaction as each record. ``verify`` walks the chain.

Appends serialise: SQLite's ``BEGIN IMMEDIATE`` (``db.transaction``) or a PostgreSQL
transaction-level advisory lock, so two writers never chain onto the same record.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text

from stcloud import db
from stcloud.accounts import scope
from stcloud.models import AuditRecord, Setting, utcnow
from stcloud.timeutil import iso_z

log = logging.getLogger(__name__)

GENESIS = "0" * 64
HEAD_KEY = "audit_head"
_PG_LOCK_ID = 731_0001  # arbitrary, constant: the audit append lock
MAX_LIMIT = 1000


def _canonical(fields: dict) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fields(rec: AuditRecord) -> dict:
    return {"seq": rec.seq, "at": iso_z(rec.at), "actor": rec.actor, "key_id": rec.key_id,
            "action": rec.action, "target": rec.target, "client_addr": rec.client_addr,
            "outcome": rec.outcome, "detail": rec.detail, "prev_hash": rec.prev_hash}


def compute_hash(rec: AuditRecord) -> str:
    return hashlib.sha256(_canonical(_fields(rec)).encode()).hexdigest()


def record(action: str, *, target: str | None = None, outcome: str = "ok",
           actor: scope.Actor | str | None = None, detail: dict | None = None,
           client_addr: str | None = None) -> int:
    """Append one record; returns its sequence number.

    ``actor`` defaults to the actor bound to this request/task, else ``"system"``.
    """
    who = actor if actor is not None else scope.current()
    if isinstance(who, scope.Actor):
        name, key_id = who.name, who.key_id
    else:
        name, key_id = (who or "system"), None
    with db.transaction() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
        last = s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).first()
        rec = AuditRecord(
            seq=(last.seq + 1) if last else 1,
            at=utcnow(), actor=str(name)[:200], key_id=key_id, action=action[:100],
            target=(str(target)[:500] if target is not None else None),
            client_addr=client_addr or scope.client_addr(), outcome=outcome[:32],
            detail=_canonical(detail) if detail else None,
            prev_hash=last.hash if last else GENESIS,
        )
        rec.hash = compute_hash(rec)
        s.add(rec)
        head = s.get(Setting, HEAD_KEY)
        value = {"seq": rec.seq, "hash": rec.hash}
        if head is None:
            s.add(Setting(key=HEAD_KEY, value=value))
        else:
            head.value = value
        return rec.seq


@dataclass(frozen=True)
class Verification:
    ok: bool
    count: int
    problem: str | None = None


def verify(batch: int = 1000) -> Verification:
    """Walk the whole chain. Never raises for a broken chain: says where it breaks."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    with db.session() as s:
        head = s.get(Setting, HEAD_KEY)
        after = 0
        while True:
            rows = s.scalars(select(AuditRecord).where(AuditRecord.seq > after)
                             .order_by(AuditRecord.seq).limit(batch)).all()
            if not rows:
                break
            for rec in rows:
                if rec.seq != expected_seq:
                    return Verification(False, count, f"record {expected_seq} is missing (next is {rec.seq})")
                if rec.prev_hash != prev_hash:
                    return Verification(False, count, f"record {rec.seq} does not follow record {rec.seq - 1} "
                                                      "(a record before it was changed or removed)")
                if compute_hash(rec) != rec.hash:
                    return Verification(False, count, f"record {rec.seq} was changed after it was written")
                prev_hash, expected_seq, count = rec.hash, expected_seq + 1, count + 1
            after = rows[-1].seq
        head_value = head.value if head is not None else None
    if count == 0 and head_value is None:
        return Verification(True, 0)
    if not isinstance(head_value, dict) or head_value.get("seq") != count or head_value.get("hash") != prev_hash:
        return Verification(False, count, f"the newest records were removed or replaced (head says "
                                          f"{head_value.get('seq') if isinstance(head_value, dict) else 'nothing'}, "
                                          f"the log ends at {count})")
    return Verification(True, count)


def to_dict(rec: AuditRecord) -> dict:
    d = _fields(rec)
    d["detail"] = json.loads(rec.detail) if rec.detail else None
    d["hash"] = rec.hash
    return d


def _filtered(stmt, actor: str | None, action: str | None, since: datetime | None):
    """``action`` matches exactly or, ending in ``.`` or ``*``, as a prefix (``job.*``)."""
    if actor:
        stmt = stmt.where(AuditRecord.actor == actor)
    if action:
        if action.endswith((".", "*")):
            stmt = stmt.where(AuditRecord.action.startswith(action.rstrip("*"), autoescape=True))
        else:
            stmt = stmt.where(AuditRecord.action == action)
    if since is not None:
        stmt = stmt.where(AuditRecord.at >= since)
    return stmt


def query(*, actor: str | None = None, action: str | None = None, since: datetime | None = None,
          limit: int = 100, before_seq: int | None = None) -> list[dict]:
    """Newest first, at most ``limit`` (capped at MAX_LIMIT)."""
    stmt = _filtered(select(AuditRecord), actor, action, since)
    if before_seq is not None:
        stmt = stmt.where(AuditRecord.seq < before_seq)
    stmt = stmt.order_by(AuditRecord.seq.desc()).limit(min(max(limit, 1), MAX_LIMIT))
    with db.session() as s:
        return [to_dict(r) for r in s.scalars(stmt)]


def export_lines(*, actor: str | None = None, action: str | None = None,
                 since: datetime | None = None, batch: int = 500) -> Iterator[str]:
    """JSON Lines, oldest first, every matching record (streamed in batches)."""
    after = 0
    while True:
        stmt = _filtered(select(AuditRecord).where(AuditRecord.seq > after), actor, action, since)
        with db.session() as s:
            rows = [to_dict(r) for r in s.scalars(stmt.order_by(AuditRecord.seq).limit(batch))]
        if not rows:
            return
        for row in rows:
            yield json.dumps(row, ensure_ascii=False) + "\n"
        after = rows[-1]["seq"]
