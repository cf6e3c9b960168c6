"""Validation of request input through the API models: one way to turn a pydantic error into
problem+json (400, ``errors: [{field, message}]``, ``field`` = the first bad field)."""
from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from flask import request

from stcloud.errors import BadRequest, StcloudError

M = TypeVar("M", bound=pydantic.BaseModel)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _is_tag(part: str) -> bool:
    """Union/validator tags pydantic puts in an error's path (``function-after[...]``, ``float``,
    a model's class name) -- never one of our members (lower-case snake_case)."""
    return "[" in part or part[:1].isupper() or part in _TYPE_TAGS


def field_name(loc: tuple, prefix: str = "") -> str:
    """``("dataloader_config", 0, "dataset_type")`` -> ``dataloader_config[0].dataset_type``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_tag(str(part)):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _message(err: dict) -> str:
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def errors_of(exc: pydantic.ValidationError, prefix: str = "") -> list[dict]:
    seen: set[tuple[str, str]] = set()
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        item = (field_name(tuple(err.get("loc", ())), prefix), _message(err))
        if item not in seen:
            seen.add(item)
            out.append({"field": item[0], "message": item[1]})
    return out


def _sentence(error: dict) -> str:
    """``config is not valid JSON`` for our own messages, ``field: Input should be ...`` for pydantic's."""
    message = error["message"]
    if message.startswith(("is ", "must ")):
        return f"{error['field']} {message}"
    return f"{error['field']}: {message}"


def problem_of(exc: pydantic.ValidationError, prefix: str = "", status: int = 400) -> StcloudError:
    errors = errors_of(exc, prefix)
    first = errors[0] if errors else {"field": prefix or "body", "message": "invalid value"}
    detail = "; ".join(_sentence(e) for e in errors[:5])
    if len(errors) > 5:
        detail += f" (and {len(errors) - 5} more)"
    return BadRequest(detail, status=status, title="Invalid input" if status == 400 else "Validation failed",
                      extra={"field": first["field"], "errors": errors})


def parse(model: type[M], data: Any, *, prefix: str = "", status: int = 400) -> M:
    """``data`` validated by ``model``. Raises BadRequest (400, or ``status`` for areas whose
    contract is 422) naming each bad field."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise problem_of(exc, prefix, status) from None


def json_object(required: bool = True) -> dict:
    """The request's JSON object. Raises BadRequest for a missing/invalid/non-object body."""
    if not request.data:
        if required:
            raise BadRequest("request body must be a JSON object")
        return {}
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("request body is not valid JSON (send Content-Type: application/json)")
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def body(model: type[M], *, required: bool = True, status: int = 400) -> M:
    """The request's JSON object validated by ``model`` (400 for a missing/non-object body)."""
    return parse(model, json_object(required=required), status=status)


def checked(model: type[M], *, required: bool = True, status: int = 400) -> dict:
    """The request's JSON object, as sent, after ``model`` accepted it: for services that take
    the raw members (partial updates, unknown-field messages of their own)."""
    data = json_object(required=required)
    parse(model, data, status=status)
    return data


def query(model: type[M]) -> M:
    """The query string validated by ``model`` (the last value of a repeated parameter)."""
    return parse(model, request.args.to_dict())
