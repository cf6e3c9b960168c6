"""Models shared by every area: the problem body, untyped objects."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    field: str = Field(description="the bad field, e.g. ``dataloader_config[0].dataset_type``")
    message: str


class Problem(BaseModel):
    """``application/problem+json`` (RFC 9457): every error the API answers."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="the (first) field the error is about")
    errors: list[FieldError] | None = Field(None, description="every bad field, for validation errors")


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document (``GET /api/openapi.json``); its own schema is the OpenAPI
    specification's, so only the top level is described here."""

    model_config = ConfigDict(extra="allow")
    openapi: str
    info: dict[str, Any]
    paths: dict[str, dict[str, Any]]
    components: dict[str, Any]
