"""Placement (issue 18 item 4): where a ``provider: "auto"`` job runs, and budget holds.

Policy, in order:
1. a free self-hosted worker that matches the job's requirements — idle now, or busy with a
   job whose estimate ends within ``wait_minutes`` (default 10) — runs it (provider ``worker``);
2. any provider offering its own idle capacity through the seam (``placement_offer``, e.g.
   a Slurm partition with idle nodes) within ``wait_minutes``;
3. otherwise the cloud provider (one that uploads the data) whose p90 cost estimate is the
   cheapest among those whose spend limits accept the job;
4. when every candidate is over a spend limit: with ``hold`` (body ``"hold": true`` or
   ``"placement": {"on_budget": "hold"}``) the job waits until the period rolls over,
   otherwise 402 as a plain submit would answer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from stcloud import db, states
from stcloud.costs import rates
from stcloud.costs import service as costs
from stcloud.errors import BadRequest, NotConfigured, PaymentRequired, StcloudError
from stcloud.models import Job, Worker, utcnow
from stcloud.providers import registry
from stcloud.providers.base import AVAILABLE
from stcloud.workers import matching
from stcloud.workers import service as workers

AUTO = "auto"
DEFAULT_WAIT_MINUTES = 10.0


@dataclass(frozen=True)
class Policy:
    wait_minutes: float = DEFAULT_WAIT_MINUTES
    hold: bool = False  # wait for the budget period instead of 402


@dataclass
class Decision:
    provider: str | None  # None: held for the budget
    reason: str
    hardware: str | None = None
    held: bool = False
    hold_until: str | None = None  # ISO: the earliest end of a blocking period
    candidates: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "decided_at": utcnow().isoformat().replace("+00:00", "Z")}


def parse_policy(body: dict) -> Policy:
    """``hold`` and ``placement: {wait_minutes, on_budget: hold|reject}``. Raises BadRequest."""
    raw = body.get("placement") or {}
    if not isinstance(raw, dict):
        raise BadRequest("placement must be an object: {wait_minutes, on_budget}", extra={"field": "placement"})
    unknown = set(raw) - {"wait_minutes", "on_budget"}
    if unknown:
        raise BadRequest(f"placement: unknown member(s) {', '.join(sorted(unknown))}", extra={"field": "placement"})
    wait = raw.get("wait_minutes", DEFAULT_WAIT_MINUTES)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 24 * 60:
        raise BadRequest("placement.wait_minutes must be a number of minutes from 0 to 1440",
                         extra={"field": "placement"})
    on_budget = raw.get("on_budget", "reject")
    if on_budget not in ("hold", "reject"):
        raise BadRequest("placement.on_budget must be hold or reject", extra={"field": "placement"})
    hold = body.get("hold", False)
    if not isinstance(hold, bool):
        raise BadRequest("hold must be true or false", extra={"field": "hold"})
    return Policy(float(wait), hold or on_budget == "hold")


# ---- self-hosted capacity ---------------------------------------------------------------------

def _remaining_seconds(job: Job | None, now: datetime) -> float | None:
    if job is None:
        return None
    seconds = (job.estimate or {}).get("seconds")
    if not seconds or job.started_at is None:
        return None
    return max(0.0, float(seconds) - (now - job.started_at).total_seconds())


def worker_wait_seconds(requirements: dict | None) -> tuple[float | None, str]:
    """How soon a self-hosted worker matching ``requirements`` is free: 0 for an idle one
    (when no queued worker job is ahead of it), the estimated rest of its current job for a
    busy one; None when no matching worker is online. Also a sentence saying which."""
    pools = workers.worker_pools()
    if "worker" not in pools:
        return None, "no worker pool provider"
    now = utcnow()
    best: tuple[float | None, str] = (None, "no online worker matches the job's requirements")
    with db.session() as s:
        timeout = workers.timeout_seconds(s)
        queued = s.scalar(select(func.count()).select_from(Job).where(
            Job.status == states.QUEUED, Job.provider.in_(tuple(pools)))) or 0
        for w in s.scalars(select(Worker)).all():
            caps = matching.WorkerCaps(labels=dict(w.labels or {}), gpu_count=w.gpu_count or 0,
                                       vram_gb=float(w.vram_gb or 0.0), is_local=bool(w.is_local))
            if not matching.can_claim("worker", requirements, caps, pools):
                continue
            status = workers.effective_status(w, now, timeout)
            if status == workers.IDLE and not queued:
                return 0.0, f"worker {w.name} is idle"
            if status == workers.BUSY:
                rest = _remaining_seconds(s.get(Job, w.current_job_id) if w.current_job_id else None, now)
                if rest is not None and (best[0] is None or rest < best[0]):
                    best = (rest, f"worker {w.name} is busy; its job should end in about {rest / 60:.0f} min")
            elif status == workers.IDLE and best[0] is None:
                best = (None, f"worker {w.name} is idle but {queued} queued job(s) are ahead")
    return best


# ---- the decision -----------------------------------------------------------------------------

def _hardware_for(name: str, wanted: str | None) -> str | None:
    profiles = rates.hardware_profiles(name)
    return wanted if wanted in profiles else None


def cloud_candidates(body: dict) -> list[dict]:
    """Every available cloud provider with its p90 estimate and what its limits say."""
    out = []
    config = body.get("config") if isinstance(body.get("config"), dict) else {}
    for name, svc in registry.services():
        if not svc.uploads_data or svc.status != AVAILABLE or svc.worker_pool:
            continue
        if svc.not_ready_reason():
            out.append({"provider": name, "skipped": svc.not_ready_reason()})
            continue
        hardware = _hardware_for(name, body.get("hardware")) or svc.default_hardware
        try:
            with db.session() as s:
                est = costs.estimate(s, name, hardware, config)
                check = costs.check_limits(s, name, est.estimated_cost_usd)
        except StcloudError as exc:
            out.append({"provider": name, "skipped": exc.detail})
            continue
        out.append({"provider": name, "hardware": hardware,
                    "p90_usd": round(float(est.p90_usd or est.estimated_cost_usd), 6),
                    "estimated_cost_usd": est.estimated_cost_usd, "blocked": check.block_reason,
                    "period_end": (check.block_extra or {}).get("period_end")})
    return out


def decide(body: dict, policy: Policy) -> Decision:
    """Where ``body`` (provider "auto") runs now, or that it is held. Raises
    PaymentRequired (every cloud candidate over a limit, no hold) or NotConfigured."""
    wait_limit = policy.wait_minutes * 60
    wait, why = worker_wait_seconds(body.get("requirements"))
    considered: list[dict] = [{"provider": "worker", "wait_seconds": wait, "note": why}]
    if wait is not None and wait <= wait_limit:
        return Decision("worker", f"self-hosted: {why} (within {policy.wait_minutes:g} min)",
                        candidates=considered)
    for name, svc in registry.services():
        if svc.worker_pool or svc.status != AVAILABLE or svc.not_ready_reason():
            continue
        offer = svc.placement_offer(body.get("requirements"))
        if offer is None:
            continue
        considered.append({"provider": name, "wait_seconds": offer.wait_seconds, "note": offer.note})
        if offer.available and offer.wait_seconds <= wait_limit:
            return Decision(name, f"{svc.label}: {offer.note or 'idle capacity'}", candidates=considered)
    cloud = cloud_candidates(body)
    considered += cloud
    priced = [c for c in cloud if "p90_usd" in c]
    fits = sorted((c for c in priced if not c["blocked"]), key=lambda c: c["p90_usd"])
    no_worker = f"no free worker within {policy.wait_minutes:g} min ({why})"
    if fits:
        best = fits[0]
        return Decision(best["provider"], f"{no_worker}; {best['provider']} has the cheapest p90 estimate "
                        f"(${best['p90_usd']:.2f}) within the spend limits", hardware=best["hardware"],
                        candidates=considered)
    if priced:
        blocks = "; ".join(c["blocked"] for c in priced)
        if policy.hold:
            ends = sorted(c["period_end"] for c in priced if c.get("period_end"))
            return Decision(None, f"held until the budget period rolls over: {blocks}", held=True,
                            hold_until=ends[0] if ends else None, candidates=considered)
        raise PaymentRequired(f"{no_worker}, and every cloud provider is over a spend limit: {blocks}",
                              extra={"placement": considered})
    raise NotConfigured(f"provider auto: {no_worker}, and no cloud provider is configured",
                        extra={"field": "provider", "placement": considered})


def budget_hold(provider: str, body: dict) -> Decision | None:
    """For ``hold`` with a named provider: a held Decision when its limits would refuse the
    job now (the 402 a submit would answer), else None."""
    svc = registry.available(provider)
    hardware = body.get("hardware") or svc.default_hardware
    config = body.get("config") if isinstance(body.get("config"), dict) else {}
    with db.session() as s:
        est = costs.estimate(s, provider, hardware, config)
        check = costs.check_limits(s, provider, est.estimated_cost_usd)
    if not check.block_reason:
        return None
    return Decision(None, f"held until the budget period rolls over: {check.block_reason}", held=True,
                    hold_until=(check.block_extra or {}).get("period_end"))
