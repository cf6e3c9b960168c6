"""Consent to upload local data to a provider that takes it off this machine (SPEC §3 step 2),
enforced on the server: ``ask | allow | deny`` ("Always Ask / Always Allow / Never Upload")."""
from __future__ import annotations

from typing import Any

from stcloud import settings
from stcloud.errors import BadRequest, Conflict, Forbidden

CHOICES = {"ask": "Always Ask", "allow": "Always Allow", "deny": "Never Upload"}
SETTING_KEY = "consent"


def current() -> str:
    value = settings.get(SETTING_KEY)
    return value if value in CHOICES else "ask"


def set_consent(value: Any) -> str:
    """Store the consent setting. Raises BadRequest naming the field."""
    if not isinstance(value, str) or value not in CHOICES:
        raise BadRequest(f"consent must be one of {', '.join(CHOICES)} "
                         f"({', '.join(CHOICES.values())}), got {value!r}", extra={"field": "consent"})
    settings.put(SETTING_KEY, value)
    return value


def view() -> dict:
    value = current()
    return {"consent": value, "label": CHOICES[value], "choices": dict(CHOICES)}


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def refuse_cloud(provider_label: str) -> None:
    """"Never Upload" turns cloud training off: raises Forbidden for any job on a provider that
    takes data off this machine, local datasets or not (Hub/S3 datasets included)."""
    if current() == "deny":
        raise Forbidden(
            f"Cloud training is off: the consent setting is Never Upload, so no job goes to "
            f"{provider_label} (not even with Hub or S3 datasets). Run the job on this machine or a "
            f"worker, or change the setting on the Settings page.", extra={"consent": "deny"})


def check(provider_label: str, data_consent: bool, summary: dict) -> None:
    """Raises Forbidden (``deny``) or Conflict (``ask`` without ``data_consent``) with the
    dataset summary; returns when the upload may go ahead."""
    setting = current()
    totals = summary["totals"]
    what = f"{totals['files']} files ({_human(totals['bytes'])}) from {totals['datasets']} local dataset(s)"
    if setting == "deny":
        raise Forbidden(
            f"Uploading local data to {provider_label} is disabled (consent setting: Never Upload). This job "
            f"would upload {what}. Change the setting on the Settings page, or run the job on a worker.",
            extra={"consent": setting, "summary": summary})
    if setting == "ask" and not data_consent:
        raise Conflict(
            f"This job uploads {what} to {provider_label}. Review the summary and submit again with "
            f"data_consent: true to confirm.",
            title="Consent required",
            extra={"consent": setting, "consent_required": True, "summary": summary})
