"""Which worker may run which job. Pure: no Flask, no database.

A job's ``requirements`` is ``{"labels": {key: glob}, "min_gpus": int, "min_vram_gb": float}``
(every member optional). A worker matches when, for each required label, it has that key
and its value matches the glob (``fnmatch`` rules, case-sensitive: ``*``, ``?``, ``[ab]``);
when it has at least ``min_gpus`` GPUs; and when each of its GPUs has at least
``min_vram_gb`` of memory (``vram_gb`` on a worker is the memory of its smallest GPU).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from stcloud.jobs.requirements import normalize_requirements  # noqa: F401 - part of this module's API
from stcloud.providers.base import EMBEDDED_POOL as EMBEDDED
from stcloud.providers.base import SHARED_POOL as SHARED


@dataclass(frozen=True)
class WorkerCaps:
    labels: Mapping[str, str]
    gpu_count: int = 0
    vram_gb: float = 0.0
    is_local: bool = False


def providers_for(pools: Mapping[str, str], is_local: bool) -> tuple[str, ...]:
    """Job providers a worker may claim, from ``{provider: pool}``: a ``shared`` pool's jobs
    go to any worker, an ``embedded`` pool's (``local``) only to the embedded worker."""
    return tuple(name for name, pool in pools.items() if pool == SHARED or (is_local and pool == EMBEDDED))


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


def can_claim(provider: str, requirements: Mapping | None, caps: WorkerCaps, pools: Mapping[str, str]) -> bool:
    return provider in providers_for(pools, caps.is_local) and matches(requirements, caps)
