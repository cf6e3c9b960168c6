"""A job's worker requirements: ``{"labels": {key: glob}, "min_gpus": int, "min_vram_gb": float}``
(every member optional). Pure: no Flask, no database. ``workers.matching`` decides which
worker satisfies them."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def normalize_requirements(raw: Any) -> dict:
    """Validate a requirements object; returns a clean dict. Raises ValueError naming the field."""
    if raw in (None, {}):
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError("requirements must be an object")
    out: dict = {}
    labels = raw.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ValueError("requirements.labels must be an object of label -> glob")
    clean = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not k or not isinstance(v, (str, int, float)):
            raise ValueError(f"requirements.labels: bad entry {k!r}: {v!r}")
        clean[k] = str(v)
    if clean:
        out["labels"] = clean
    for key, kind in (("min_gpus", int), ("min_vram_gb", float)):
        value = raw.get(key)
        if value in (None, ""):
            continue
        if isinstance(value, bool):
            raise ValueError(f"requirements.{key} must be a number")
        try:
            num = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"requirements.{key} must be a number, got {value!r}") from None
        if num < 0:
            raise ValueError(f"requirements.{key} must be >= 0")
        if num:
            out[key] = num
    return out
