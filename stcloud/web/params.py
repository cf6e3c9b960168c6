"""Query/body parameter parsing that fails with 400 naming the parameter, never 500."""
from __future__ import annotations

from flask import request

from stcloud.api import validation
from stcloud.errors import BadRequest


def int_arg(name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise BadRequest(f"{name} must be {rng}, got {value}")
    return value


def json_body(required: bool = True) -> dict:
    """The request's JSON object. Raises BadRequest for a missing/invalid/non-object body."""
    return validation.json_object(required)


def bool_value(value, name: str) -> bool:
    """A boolean from JSON or a form (``1/true/yes/on``, ``0/false/no/off/""``). Raises BadRequest."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(f"{name} must be true or false, got {value!r}")
