"""Reusable field types: finite, bounded numbers and trimmed, bounded strings.

JSON allows ``1e999`` (Python reads it as ``inf``): every float here is finite, every integer
bounded, so no value can overflow a service, a database column or a page.
"""
from __future__ import annotations

import json
from typing import Annotated, Any

import annotated_types
from pydantic import AfterValidator, AllowInfNan, BeforeValidator, WithJsonSchema

MAX_USD = 1_000_000.0  # a cost or cap above a million dollars is a typo, not a budget
MAX_STEPS = 1_000_000
MAX_GPUS = 64
MAX_VRAM_GB = 10_000.0


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
            raise ValueError(f"is not valid JSON: {exc}") from None
    return value


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _bounds(lo: float | None, hi: float | None, gt: float | None = None) -> list:
    out: list = []
    if lo is not None:
        out.append(annotated_types.Ge(lo))
    if gt is not None:
        out.append(annotated_types.Gt(gt))
    if hi is not None:
        out.append(annotated_types.Le(hi))
    return out


def _doc(description: str | None) -> list:
    # A title-less ``description`` annotation; ``Field(description=)`` inside ``X | None`` would
    # turn the constraints above into non-standard keywords (ge/le).
    return [WithJsonSchemaExtra(description)] if description else []


class WithJsonSchemaExtra:
    """Adds a description to the generated schema of an annotated type."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema["description"] = self.description
        return schema


# Constraints are annotated_types markers placed before the pre-validator: so they stay JSON
# Schema keywords (minimum, maxLength...), also inside ``X | None`` (after a BeforeValidator,
# pydantic would emit non-standard ``ge``/``le``).
def Int(lo: int | None = None, hi: int | None = None, description: str | None = None) -> Any:  # noqa: N802
    return Annotated[int, *_bounds(lo, hi), BeforeValidator(no_bool), *_doc(description)]


def Num(lo: float | None = None, hi: float | None = None, *, gt: float | None = None,  # noqa: N802
        description: str | None = None) -> Any:
    return Annotated[float, AllowInfNan(False), *_bounds(lo, hi, gt), BeforeValidator(no_bool), *_doc(description)]


def Str(max_length: int, min_length: int = 0, description: str | None = None) -> Any:  # noqa: N802
    lengths = [annotated_types.MaxLen(max_length)] + ([annotated_types.MinLen(min_length)] if min_length else [])
    return Annotated[str, *lengths, BeforeValidator(_strip), *_doc(description)]


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain a NUL character (no path or URL can)")
    return value


def PathText(max_length: int) -> Any:  # noqa: N802
    """A file path or URL: ``Str(max_length)`` without NUL characters, which the operating system
    refuses in a path (a NUL would otherwise surface as an unhandled ``ValueError``)."""
    return Annotated[Str(max_length), AfterValidator(_no_nul),
                     WithJsonSchema({"type": "string", "maxLength": max_length, "pattern": "^[^\\x00]*$"})]


Usd = Num(gt=0, hi=MAX_USD, description="US dollars, > 0 and at most 1,000,000")
Steps = Int(1, MAX_STEPS, description="training steps, 1..1,000,000")
