"""Reusable field types: finite, bounded numbers and trimmed, bounded strings.

JSON allows ``1e999`` (Python reads it as ``inf``): every float here is finite, every integer
bounded, so no value can overflow a service, a database column or a page.
"""
from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

MAX_USD = 1_000_000.0  # a cost or cap above a million dollars is a typo, not a budget
MAX_STEPS = 1_000_000
MAX_GPUS = 64
MAX_VRAM_GB = 10_000.0
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600


def no_bool(value: Any) -> Any:
    """JSON ``true`` is not the number 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def blank_none(value: Any) -> Any:
    """A blank form field (``""``) means "not given"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def json_text(value: Any) -> Any:
    """A JSON document sent as a string (form fields, ``--config-file``) is parsed first."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    return value


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def Int(lo: int | None = None, hi: int | None = None, **kw) -> Any:  # noqa: N802 - a type factory
    return Annotated[int, BeforeValidator(no_bool), Field(ge=lo, le=hi, **kw)]


def Num(lo: float | None = None, hi: float | None = None, *, gt: float | None = None, **kw) -> Any:  # noqa: N802
    return Annotated[float, BeforeValidator(no_bool),
                     Field(ge=lo, gt=gt, le=hi, allow_inf_nan=False, **kw)]


def Str(max_length: int, min_length: int = 0, **kw) -> Any:  # noqa: N802
    return Annotated[str, BeforeValidator(_strip), Field(min_length=min_length, max_length=max_length, **kw)]


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def Name(max_length: int = 200, **kw) -> Any:  # noqa: N802
    """A required, trimmed, non-empty string."""
    return Annotated[str, BeforeValidator(_strip), Field(max_length=max_length, **kw), AfterValidator(_not_blank)]


Usd = Num(gt=0, hi=MAX_USD, description="US dollars, > 0 and at most 1,000,000")
Steps = Int(1, MAX_STEPS, description="training steps, 1..1,000,000")
