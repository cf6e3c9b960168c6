"""Key/value settings in the database (consent, public URL, timezone, ...)."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from stcloud import db
from stcloud.models import Setting

DEFAULTS: dict[str, Any] = {
    "consent": "ask",
    "public_url": None,
    "timezone": "UTC",
    "worker_timeout": None,  # seconds; None -> STCLOUD_WORKER_TIMEOUT / 90
}


def get(key: str, default: Any = None, s: Session | None = None) -> Any:
    if s is not None:
        row = s.get(Setting, key)
    else:
        with db.session() as s2:
            row = s2.get(Setting, key)
    if row is None or row.value is None:
        return DEFAULTS.get(key, default) if default is None else default
    return row.value


def put(key: str, value: Any, s: Session | None = None) -> None:
    def _put(sess: Session):
        row = sess.get(Setting, key)
        if row is None:
            sess.add(Setting(key=key, value=value))
        else:
            row.value = value

    if s is not None:
        _put(s)
    else:
        with db.transaction() as s2:
            _put(s2)
