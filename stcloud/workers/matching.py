"""Which worker may run which job. Pure: no Flask, no database.

A job's ``requirements`` is ``{"labels": {key: glob}, "min_gpus": int, "min_vram_gb": float}``
(every member optional). A worker matches when, for each required label, it has that key
and its value matches the glob (``fnmatch`` rules, case-sensitive: ``*``, ``?``, ``[ab]``);
when it has at least ``min_gpus`` GPUs; and when each of its GPUs has at least
``min_vram_gb`` of memory (``vram_gb`` on a worker is the memory of its smallest GPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Mapping

LOCAL_PROVIDER = "local"
WORKER_PROVIDER = "worker"
WORKER_PROVIDERS = (WORKER_PROVIDER, LOCAL_PROVIDER)


@dataclass(frozen=True)
class WorkerCaps:
    labels: Mapping[str, str]
    gpu_count: int = 0
    vram_gb: float = 0.0
    is_local: bool = False


def providers_for(is_local: bool) -> tuple[str, ...]:
    """Job providers a worker may claim: ``local`` jobs only go to the embedded worker."""
    return WORKER_PROVIDERS if is_local else (WORKER_PROVIDER,)


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


def parse_labels(text: str | None) -> dict[str, str]:
    """``"gpu=a100,region=eu"`` -> ``{"gpu": "a100", "region": "eu"}``. Raises ValueError."""
    labels: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"label {part!r} is not key=value")
        labels[key] = value
    return labels


def clean_labels(raw: Any) -> dict[str, str]:
    """Labels from JSON (object) or text (``k=v,...``). Raises ValueError."""
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        return parse_labels(raw)
    if not isinstance(raw, Mapping):
        raise ValueError("labels must be an object of key -> value (or 'k=v,k2=v2')")
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not k.strip() or isinstance(v, (dict, list)) or v is None:
            raise ValueError(f"bad label {k!r}: {v!r}")
        out[k.strip()] = str(v)
    return out


def mismatch(requirements: Mapping | None, caps: WorkerCaps) -> str | None:
    """Why ``caps`` cannot run a job with ``requirements``; None when it can."""
    req = requirements or {}
    for key, pattern in (req.get("labels") or {}).items():
        if key not in caps.labels:
            return f"missing label {key}"
        if not fnmatchcase(str(caps.labels[key]), str(pattern)):
            return f"label {key}={caps.labels[key]} does not match {pattern}"
    min_gpus = int(req.get("min_gpus") or 0)
    if caps.gpu_count < min_gpus:
        return f"needs {min_gpus} GPU(s), worker has {caps.gpu_count}"
    min_vram = float(req.get("min_vram_gb") or 0)
    if min_vram and (caps.gpu_count == 0 or caps.vram_gb < min_vram):
        return f"needs {min_vram:g} GB VRAM per GPU, worker has {caps.vram_gb:g}"
    return None


def matches(requirements: Mapping | None, caps: WorkerCaps) -> bool:
    return mismatch(requirements, caps) is None


def can_claim(provider: str, requirements: Mapping | None, caps: WorkerCaps) -> bool:
    return provider in providers_for(caps.is_local) and matches(requirements, caps)
