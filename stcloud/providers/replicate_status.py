"""Replicate's public status page (``www.replicatestatus.com``): optional, short timeout,
cached per process, never raises."""
from __future__ import annotations

import time

from flask import current_app

from stcloud import net, proxy_settings

STATUS_PAGE = "https://www.replicatestatus.com"
STATUS_API = "https://www.replicatestatus.com/api/v2/status.json"
STATUS_CACHE_SECONDS = 60


def status_page() -> dict:
    cache = current_app.extensions.setdefault("stcloud.replicate_status", {})
    if cache.get("at") and time.monotonic() - cache["at"] < STATUS_CACHE_SECONDS:
        return cache["data"]
    url = current_app.config.get("REPLICATE_STATUS_URL", STATUS_API)
    try:
        with net.requests_session(proxy_settings.current()) as http:  # honours the outbound proxy
            resp = http.get(url, timeout=(1.5, 2.5))
        resp.raise_for_status()
        st = resp.json().get("status") or {}
        data = {"available": True, "indicator": st.get("indicator"), "description": st.get("description"),
                "url": STATUS_PAGE}
    except Exception as exc:  # noqa: BLE001 - offline is normal; degrade
        data = {"available": False, "url": STATUS_PAGE,
                "error": f"status page unreachable ({type(exc).__name__}); stcloud works without it"}
    cache.update(at=time.monotonic(), data=data)
    return data
