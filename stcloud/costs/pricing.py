"""Prices and spend as the Providers page shows and edits them.

Costs prices through the provider adapters (the registry), so the Providers page
(``providers/routes.py``) does not import costs: costs registers this module under
``app.extensions[providers.config.PRICING]`` and the page calls it there.
"""
from __future__ import annotations

from stcloud import db
from stcloud.costs import rates, service
from stcloud.models import HardwareRate, utcnow


def hardware(provider: str, adapter) -> list[dict]:
    """The provider's hardware profiles with the rate in force now (``service.hardware_choices``)."""
    return service.hardware_choices([(provider, adapter)])


def profiles(provider: str) -> dict[str, dict]:
    return rates.hardware_profiles(provider)


def set_rates(provider: str, usd_per_second: dict[str, float], note: str) -> None:
    """New rates in force from now, one row per hardware (label, GPUs, VRAM from the profile)."""
    now = utcnow()
    catalogue = rates.hardware_profiles(provider)
    with db.transaction() as s:
        for hw, rate in usd_per_second.items():
            prof = catalogue.get(hw, {})
            s.add(HardwareRate(provider=provider, hardware=hw, label=prof.get("label"),
                               gpu_count=prof.get("gpu_count") or 1, vram_gb=prof.get("vram_gb"),
                               usd_per_second=rate, effective_from=now, note=note))


def spend(provider: str) -> dict:
    return service.provider_spend(provider)
