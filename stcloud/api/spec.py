"""Route metadata for the OpenAPI document: ``@operation(...)`` on a view function.

    @api.put("/consent")
    @operation(body=ConsentBody, responses={200: ConsentView}, summary="Set the consent setting")
    def put_consent():
        choice = validation.body(ConsentBody)
        ...

``body``/``query`` are the models the view validates its input with (the same objects);
``responses`` maps a status to a model, ``None`` (no body), a media type string such as
``"text/html"`` or ``"application/zip"``, ``{media type: model or None}`` for several, or a
``(any of those, description)`` pair. ``links`` names the operations an answer's values feed
(``{201: {"GetUser": ("accounts_api.get_user", "get", {"username": "$response.body#/user/username"})}}``). Problem
responses (400/401/403/404/409/413/422/429/502/503, ``application/problem+json``) are added to
every operation by the document builder. A route without ``@operation`` is still listed, with an
untyped JSON answer: add one when you add a route.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic

ATTR = "__stcloud_operation__"


@dataclass(frozen=True)
class Operation:
    summary: str | None = None
    description: str | None = None
    body: type[pydantic.BaseModel] | None = None
    body_required: bool = True
    query: type[pydantic.BaseModel] | None = None
    responses: dict[int, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    public: bool = False  # no authentication
    security: str | None = None  # "worker" / "webhook" for machine routes
    deprecated: bool = False
    #: ``{status: {link name: (endpoint, method, {parameter: runtime expression})}}``: which
    #: operation can use a value of this answer (OpenAPI links; the stateful fuzzer follows them).
    links: dict[int, dict[str, tuple[str, str, dict[str, str]]]] = field(default_factory=dict)


def operation(**kwargs) -> Callable:
    """Attach an ``Operation`` to a view function (put it under the route decorator)."""
    op = Operation(**{**kwargs, "tags": tuple(kwargs.get("tags", ()))})

    def wrap(fn: Callable) -> Callable:
        setattr(fn, ATTR, op)
        return fn

    return wrap


def of(view: Callable | None) -> Operation | None:
    return getattr(view, ATTR, None) if view is not None else None
