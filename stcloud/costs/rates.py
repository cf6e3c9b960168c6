"""Hardware rates: a dated, editable $/s per hardware profile per provider.

A rate prices the whole machine of a profile, so a multi-GPU profile (``gpu-l40s-2x``) has
its own rate. Rows in ``hardware_rates`` are never updated in place: an edit adds a row with
a new ``effective_from``, and the newest row with ``effective_from <= at`` is the rate at
``at``. The adapters' built-in prices (``hardware_profiles()``; Replicate's are the seeds')
apply where no row exists. A job records its
rate at submit, so an edit never rewrites the cost of an existing job.

Also here: the seconds-per-step setting used by steps-based estimates.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from stcloud import db, settings
from stcloud.costs.periods import iso
from stcloud.errors import BadRequest
from stcloud.models import HardwareRate, utcnow
from stcloud.providers import registry
from stcloud.providers.base import HardwareProfile

FALLBACK_PROFILE = "default"  # the profile of a provider whose jobs name none (self-hosted)


def _profile_dict(provider: str, p: HardwareProfile) -> dict:
    return {"provider": provider, "hardware": p.name, "label": p.label, "gpu_count": p.gpu_count,
            "vram_gb": p.vram_gb, "usd_per_second": p.usd_per_hour / 3600.0, "note": p.note}


def default_profiles() -> dict[tuple[str, str], dict]:
    """The hardware catalogue: every registered provider's ``hardware_profiles()`` with the
    adapter's built-in price. A row in ``hardware_rates`` wins over these."""
    return {(name, p.name): _profile_dict(name, p)
            for name, svc in registry.services() for p in svc.hardware_profiles()}


def provider_profiles(provider: str) -> dict[tuple[str, str], dict]:
    """``default_profiles()`` of one provider: only its adapter is built (a submit and a rate
    lookup need no other provider's settings read)."""
    svc = registry.maybe_get(provider)
    return {(provider, p.name): _profile_dict(provider, p) for p in svc.hardware_profiles()} if svc is not None else {}


def adapter_profile(provider: str, hardware: str) -> dict | None:
    """A profile the adapter prices without listing it (``CloudTrainerService.profile``:
    Slurm's per-job GPU count), as a catalogue entry; None when it knows no such profile."""
    svc = registry.maybe_get(provider)
    found = svc.profile(hardware) if svc is not None else None
    return _profile_dict(provider, found) if found is not None else None


def providers() -> tuple[str, ...]:
    return registry.display_order()


def hardware_profiles(provider: str) -> dict[str, dict]:
    """``{name: {label, vram_gb, gpu_count}}`` of ``provider``: the adapter's profiles and
    any profile with a configured rate (not the profiles an adapter prices unlisted: see
    ``profile_of``)."""
    out = {hw: {"label": p["label"] or hw, "vram_gb": p["vram_gb"], "gpu_count": p["gpu_count"] or 1}
           for (_, hw), p in provider_profiles(provider).items()}
    with db.session() as s:
        for row in s.scalars(select(HardwareRate).where(HardwareRate.provider == provider)):
            out.setdefault(row.hardware, {"label": row.label or row.hardware, "vram_gb": row.vram_gb,
                                          "gpu_count": row.gpu_count or 1})
    return out


def profile_of(provider: str, hardware: str | None) -> dict | None:
    """``{label, vram_gb, gpu_count}`` of one profile, listed or priced unlisted by the
    adapter; None when neither knows it."""
    listed = hardware_profiles(provider).get(hardware or "")
    if listed is not None or not hardware:
        return listed
    priced = adapter_profile(provider, hardware)
    return None if priced is None else {"label": priced["label"] or hardware, "vram_gb": priced["vram_gb"],
                                        "gpu_count": priced["gpu_count"]}


SECONDS_PER_STEP_KEY = "cost_seconds_per_step"
# Seeds: a 1000-step Flux LoRA takes 30-60 min on an L40S (1.8-3.6 s/step): the midpoint.
DEFAULT_SECONDS_PER_STEP = 2.7


def profile_key(provider: str, hardware: str | None) -> str:
    return f"{provider}/{hardware or FALLBACK_PROFILE}"


def default_hardware(s: Session, provider: str) -> str:
    """The profile a job gets when it names none: the adapter's default (Replicate: the one
    set on the Providers page), else ``default``."""
    service = registry.maybe_get(provider)
    return (service.default_hardware if service is not None else None) or FALLBACK_PROFILE


def _row_at(s: Session, provider: str, hardware: str, at: datetime) -> HardwareRate | None:
    return s.scalars(
        select(HardwareRate)
        .where(HardwareRate.provider == provider, HardwareRate.hardware == hardware,
               HardwareRate.effective_from <= at)
        .order_by(HardwareRate.effective_from.desc(), HardwareRate.id.desc())
        .limit(1)
    ).first()


def _known_profiles(s: Session, provider: str, catalogue: dict) -> list[str]:
    names = {hw for (p, hw) in catalogue if p == provider}
    names.update(s.scalars(select(HardwareRate.hardware).where(HardwareRate.provider == provider)))
    return sorted(names)


def resolve(s: Session, provider: str, hardware: str | None, at: datetime | None = None) -> dict:
    """The rate profile that prices ``provider``/``hardware`` at ``at`` (default now):
    ``{provider, hardware, usd_per_second, label, gpu_count, vram_gb, effective_from, source}``.

    A provider with a ``default`` profile (self-hosted workers) prices an unknown profile at
    it. Raises BadRequest (naming ``hardware``) for another provider's profile without a
    rate, rather than pricing it at another profile's rate.
    """
    registry.validate_name(provider)
    at = at or utcnow()
    catalogue = provider_profiles(provider)  # only this provider's keys are looked up
    hw = hardware or default_hardware(s, provider)
    has_fallback = (provider, FALLBACK_PROFILE) in catalogue
    candidates = [hw, FALLBACK_PROFILE] if has_fallback and hw != FALLBACK_PROFILE else [hw]
    for name in candidates:
        row = _row_at(s, provider, name, at)
        if row is not None:
            return {**_row_dict(row), "source": "table"}
        if (provider, name) in catalogue:
            return {**catalogue[(provider, name)], "effective_from": None, "source": "default"}
        if (priced := adapter_profile(provider, name)) is not None:
            return {**priced, "effective_from": None, "source": "default"}
    known = ", ".join(_known_profiles(s, provider, catalogue))
    raise BadRequest(f"no rate for {provider} hardware {hw!r}; known profiles: {known} "
                     f"(add a rate on the Spend page or PUT /api/cloud/rates)", extra={"field": "hardware"})


def rate_at(s: Session, provider: str, hardware: str | None, at: datetime | None = None) -> float:
    """$/s for the whole machine of ``provider``/``hardware`` at ``at``. Raises BadRequest."""
    return float(resolve(s, provider, hardware, at)["usd_per_second"])


def _row_dict(row: HardwareRate) -> dict:
    return {"id": row.id, "provider": row.provider, "hardware": row.hardware, "label": row.label,
            "gpu_count": row.gpu_count, "vram_gb": row.vram_gb, "usd_per_second": row.usd_per_second,
            "effective_from": row.effective_from, "note": row.note}


def public(rate: dict) -> dict:
    """JSON shape of a rate (adds $/hour, ISO dates)."""
    out = {k: v for k, v in rate.items() if k != "id"}
    out["usd_per_second"] = round(float(rate["usd_per_second"]), 10)
    out["usd_per_hour"] = round(float(rate["usd_per_second"]) * 3600, 6)
    out["effective_from"] = iso(rate.get("effective_from"))
    return out


def current_rates(s: Session, at: datetime | None = None) -> list[dict]:
    """Every profile with its rate in force at ``at`` (table rows win over defaults), plus
    ``upcoming`` rates with a future ``effective_from``."""
    at = at or utcnow()
    catalogue = default_profiles()
    names = registry.display_order()
    pairs = set(catalogue)
    pairs.update((p, hw) for p, hw in s.execute(select(HardwareRate.provider, HardwareRate.hardware)))
    out = []
    for provider, hw in sorted(pairs, key=lambda p: (names.index(p[0]) if p[0] in names else len(names), p[1])):
        row = _row_at(s, provider, hw, at)
        if row is not None:
            item = {**_row_dict(row), "source": "table"}
        elif (provider, hw) in catalogue:
            item = {**catalogue[(provider, hw)], "effective_from": None, "source": "default"}
        else:
            item = None
        upcoming = s.scalars(
            select(HardwareRate).where(HardwareRate.provider == provider, HardwareRate.hardware == hw,
                                       HardwareRate.effective_from > at)
            .order_by(HardwareRate.effective_from)
        ).all()
        if item is None and not upcoming:
            continue
        entry = public(item) if item else {"provider": provider, "hardware": hw, "usd_per_second": None,
                                           "usd_per_hour": None, "source": "none"}
        entry["upcoming"] = [public(_row_dict(r)) for r in upcoming]
        out.append(entry)
    return out


def rate_history(s: Session, limit: int = 200) -> list[dict]:
    rows = s.scalars(select(HardwareRate).order_by(HardwareRate.effective_from.desc(),
                                                   HardwareRate.id.desc()).limit(limit)).all()
    return [public(_row_dict(r)) for r in rows]


def _number(field: str, value, *, lo: float = 0.0) -> float:
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"{field} must be a number", extra={"field": field})
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{field} must be a number, got {value!r}", extra={"field": field}) from None
    if out != out or out in (float("inf"), float("-inf")) or out < lo:
        raise BadRequest(f"{field} must be a number >= {lo:g}", extra={"field": field})
    return out


def _parse_when(value) -> datetime:
    if value in (None, ""):
        return utcnow()
    if not isinstance(value, str):
        raise BadRequest("effective_from must be an ISO 8601 date-time", extra={"field": "effective_from"})
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"effective_from {value!r} is not an ISO 8601 date-time",
                         extra={"field": "effective_from"}) from None
    if dt.tzinfo is None:
        raise BadRequest("effective_from needs a time zone offset (e.g. 2025-01-01T00:00:00Z)",
                         extra={"field": "effective_from"})
    return dt


def validate_rate(item) -> dict:
    """One rate from the API: ``{provider, hardware, usd_per_hour | usd_per_second, label?,
    gpu_count?, vram_gb?, effective_from?, note?}``. Raises BadRequest naming the field."""
    if not isinstance(item, dict):
        raise BadRequest("each rate must be a JSON object")
    provider = item.get("provider")
    if provider not in registry.names():
        raise BadRequest(f"provider must be one of {', '.join(registry.names())}", extra={"field": "provider"})
    hardware = item.get("hardware") or (FALLBACK_PROFILE if (provider, FALLBACK_PROFILE) in default_profiles()
                                        else None)
    if not isinstance(hardware, str) or not hardware.strip() or len(hardware) > 64:
        raise BadRequest("hardware must be a profile name (1-64 characters)", extra={"field": "hardware"})
    if "usd_per_second" in item and item["usd_per_second"] is not None:
        per_second = _number("usd_per_second", item["usd_per_second"])
    elif "usd_per_hour" in item:
        per_second = _number("usd_per_hour", item["usd_per_hour"]) / 3600.0
    else:
        raise BadRequest("give usd_per_hour or usd_per_second", extra={"field": "usd_per_hour"})
    out = {"provider": provider, "hardware": hardware.strip(), "usd_per_second": per_second,
           "effective_from": _parse_when(item.get("effective_from"))}
    if item.get("gpu_count") not in (None, ""):
        gpus = _number("gpu_count", item["gpu_count"], lo=1)
        if gpus != int(gpus):
            raise BadRequest("gpu_count must be a whole number >= 1", extra={"field": "gpu_count"})
        out["gpu_count"] = int(gpus)
    if item.get("vram_gb") not in (None, ""):
        out["vram_gb"] = _number("vram_gb", item["vram_gb"])
    for key, size in (("label", 100), ("note", 500)):
        if item.get(key) not in (None, ""):
            if not isinstance(item[key], str) or len(item[key]) > size:
                raise BadRequest(f"{key} must be a string of at most {size} characters", extra={"field": key})
            out[key] = item[key]
    return out


def put_rates(items: list) -> list[dict]:
    """Add dated rates (one transaction). Unset label/GPU/VRAM are carried over from the
    profile's current rate. Returns the rows written. Raises BadRequest naming the field."""
    clean = [validate_rate(i) for i in items]
    written = []
    with db.transaction() as s:
        for r in clean:
            try:
                base = resolve(s, r["provider"], r["hardware"], r["effective_from"])
            except BadRequest:
                base = {}
            row = HardwareRate(
                provider=r["provider"], hardware=r["hardware"], usd_per_second=r["usd_per_second"],
                effective_from=r["effective_from"],
                label=r.get("label", base.get("label")),
                gpu_count=r.get("gpu_count", base.get("gpu_count") or 1),
                vram_gb=r.get("vram_gb", base.get("vram_gb")),
                note=r.get("note"),
            )
            s.add(row)
            s.flush()
            written.append(public(_row_dict(row)))
    return written


# ---- seconds per step (steps-based estimates) ---------------------------------------------

def seconds_per_step_table(s: Session | None = None) -> dict[str, float]:
    """``{"default": 2.7, "replicate/gpu-a100-large": 1.9, ...}``."""
    stored = settings.get(SECONDS_PER_STEP_KEY, s=s) if s is not None else settings.get(SECONDS_PER_STEP_KEY)
    table = {"default": DEFAULT_SECONDS_PER_STEP}
    if isinstance(stored, dict):
        table.update({k: float(v) for k, v in stored.items() if isinstance(v, (int, float))})
    return table


def seconds_per_step(s: Session, provider: str, hardware: str | None) -> float:
    table = seconds_per_step_table(s)
    return float(table.get(profile_key(provider, hardware), table.get(provider, table["default"])))


def put_seconds_per_step(value) -> dict[str, float]:
    """A number (the default) or ``{"default": n, "<provider>/<hardware>": n, ...}`` (merged;
    ``null`` removes a key). Raises BadRequest naming ``seconds_per_step``."""
    if not isinstance(value, dict):
        value = {"default": value}
    with db.transaction() as s:
        current = settings.get(SECONDS_PER_STEP_KEY, s=s)
        table = dict(current) if isinstance(current, dict) else {}
        for key, v in value.items():
            if not isinstance(key, str) or not key or len(key) > 100:
                raise BadRequest("seconds_per_step keys are 'default' or '<provider>/<hardware>'",
                                 extra={"field": "seconds_per_step"})
            if v is None:
                table.pop(key, None)
                continue
            n = _number("seconds_per_step", v)
            if n <= 0:
                raise BadRequest("seconds_per_step must be > 0", extra={"field": "seconds_per_step"})
            table[key] = n
        settings.put(SECONDS_PER_STEP_KEY, table, s=s)
    return seconds_per_step_table()
